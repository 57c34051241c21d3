"""Safety: prompt and output moderation, visible and invisible watermarks, C2PA provenance (issue 17)."""
