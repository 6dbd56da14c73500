"""Live web dashboard for the star_leaders leaderboard topic (see dashboard/app.py)."""
