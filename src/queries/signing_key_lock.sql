-- Serialises changes of which key is in use.
lock table auth.signing_key_material in share row exclusive mode
