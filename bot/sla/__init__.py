"""Response times against targets: first response, first human response after a page, time to resolution."""
