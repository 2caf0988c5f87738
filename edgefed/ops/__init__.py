"""Operator tooling: read the Ansible inventory, collect each node's state over SSH, judge its health.

Layering inside the package: `inventory` (hosts and their variables) and `probe` / `doctor_probe`
(the remote shell scripts and the parsing of their output) know nothing of SSH; `ssh` runs a probe
with paramiko (along the route `sshroute` works out from ssh_config and ProxyJump); `health` and
`doctor` turn a probe into a verdict; `report` and `doctor_run` render verdicts as a table, lines or
JSON. Nothing here is imported by the federation code, and nothing here opens a socket itself.
"""
