"""The shared low layer every stage and task uses: the recipe schema, where data and runs live and what
their folders hold, files, the one image decoder, the guarded network fetch, errors and plots."""
