"""The dlcli commands, one module each: recipes over the library below, which never imports them."""
