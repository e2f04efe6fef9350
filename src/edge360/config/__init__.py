"""The one configuration object: sections, value parsers, loading, live reload."""
