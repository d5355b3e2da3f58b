"""A local emulated cluster: an OpenAI-compatible frontend with emulated GPU workers."""
