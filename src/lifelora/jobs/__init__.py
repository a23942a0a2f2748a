"""Recipes that compose the layers into a result (the demo, experiments); nothing imports them."""
