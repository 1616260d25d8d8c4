"""Thin Qt widgets over the models in ``wallet.flows`` (all Qt through ``wallet.qt``)."""
