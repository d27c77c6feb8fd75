"""Pure view models: wire views and facts in, what a template shows out (no I/O, no clock
read: `now` is handed in), so each is tested without a server."""
