"""Running a node: wiring, server, supervisor and worker hub, command line."""
