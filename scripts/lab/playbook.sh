#!/usr/bin/env bash
# Runs one of the repository's playbooks against the lab exactly as an operator runs it against a
# real chief and Pis: `ansible-playbook -i inventory/lab PLAYBOOK`, from the repository root, with
# the repository's ansible.cfg, over SSH. Extra arguments go to ansible-playbook.
#
#   scripts/lab/playbook.sh site.yml
#   scripts/lab/playbook.sh teardown.yml -e edgefed_teardown_stop_services=true
#   EDGEFED_LAB_INVENTORY=inventory/lab-mpi scripts/lab/playbook.sh site.yml   (the MPI lab)
#
# The one lab-specific part is the AWS test double's credentials (moto accepts any); against AWS,
# the operator's own credentials are in the environment instead.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

# When molecule runs this, its ANSIBLE_* settings (its own ansible.cfg, roles path, inventory) are in
# the environment; the lab must run with the project's settings alone.
while read -r name; do unset "$name"; done < <(compgen -e | grep -E '^(ANSIBLE_|MOLECULE_)' || true)

# EDGEFED_LAB_PROFILE=1: each task's time per run and the slowest tasks at the end (where the lab's
# minutes go, above all on an emulated ARM worker).
if [ "${EDGEFED_LAB_PROFILE:-0}" = 1 ]; then
  export ANSIBLE_CALLBACKS_ENABLED=ansible.posix.profile_tasks PROFILE_TASKS_TASK_OUTPUT_LIMIT=40
fi

export AWS_ACCESS_KEY_ID=lab-double AWS_SECRET_ACCESS_KEY=lab-double
unset AWS_PROFILE AWS_SESSION_TOKEN

playbook=${1:?usage: playbook.sh PLAYBOOK [ansible-playbook args...]}
shift
ansible_playbook=ansible-playbook
[ -x "$root/.venv/bin/ansible-playbook" ] && ansible_playbook="$root/.venv/bin/ansible-playbook"
exec "$ansible_playbook" -i "${EDGEFED_LAB_INVENTORY:-inventory/lab}" "$playbook" "$@"
