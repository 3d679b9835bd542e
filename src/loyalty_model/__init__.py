"""loyalty_model: predict brand-loyal customers per influencer audience."""

__version__ = "0.1.0"
