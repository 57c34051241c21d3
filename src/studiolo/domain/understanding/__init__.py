"""Understanding: describe a user's photo as a character or scene (issue 17, seed 003)."""
