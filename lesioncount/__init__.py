"""lesioncount: counting new gadolinium-enhancing lesions in MS trials.

Research software, not a medical device. Importing this package imports neither
torch nor Qt; heavy parts load lazily where they are used.
"""
__version__ = "0.1.0"
