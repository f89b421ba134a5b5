"""Hydra configs for dlcli, installed as a package so `pkg://dlcli.configs` finds them."""
