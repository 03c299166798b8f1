"""The FastAGI load benchmark (``python -m bench``, ``ivr bench``); see ``bench/run.py``."""
