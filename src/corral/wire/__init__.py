"""Messages on the wire: the REST API's views and the agent channel's frames."""
