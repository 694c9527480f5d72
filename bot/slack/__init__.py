"""The Slack adapter: a Bolt app (HTTP or Socket Mode) in front of the pipeline, and the Slack chat transport."""
