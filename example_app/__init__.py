"""The example app of fastapi-mysqlpool: ``python -m example_app``.

The app is built in :mod:`example_app.main`; ``__main__`` runs it, starting a
throwaway database when ``DATABASE_URL`` is not set.
"""
