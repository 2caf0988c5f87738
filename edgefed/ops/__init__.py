"""Operator tooling: read the Ansible inventory, collect each node's state over SSH, judge its health.

Layering inside the package: `inventory` (hosts and their variables) and `probe` (the remote shell
script and the parsing of its output) know nothing of SSH; `ssh` runs the probe with paramiko;
`health` turns a probe into a verdict; `report` renders verdicts as a table or a JSON document.
Nothing here is imported by the federation code.
"""
