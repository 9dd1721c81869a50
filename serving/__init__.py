"""What serves the app beside its page (app.py): its inputs' checks, its uploads' lifecycle and
the limits on what a request may carry."""
