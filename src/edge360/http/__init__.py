"""The content plane's HTTP/1.1 protocol: wire, sending, timers, guards."""
