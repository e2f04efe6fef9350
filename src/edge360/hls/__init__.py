"""HLS playlists: parsing (the only m3u8 importer), rewriting, titles, packaging."""
