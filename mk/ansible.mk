# The Ansible appliance (issue 6, docs/ansible.md): site.yml brings the chief and workers up,
# teardown.yml closes what it opened.
#   make ansible-check   ansible-lint (production profile) + --syntax-check of both playbooks, and
#                        every roles/*/README.md up to date with its meta/argument_specs.yml
#   make role-readmes    regenerate the role READMEs from their argument specs (scripts/role_readme.py)
#   make test-ansible    tests/ansible: the gates above, the pki play against edgefed.pki and its TLS,
#                        the security-group role against moto on loopback, the validation play, the
#                        rendered units (systemd-analyze security) and configuration (edgefed.config)
#   make test-ansible-hosts  tests/ansible marked `lab`: site.yml --check and teardown.yml against
#                        fresh containers of the lab image, the chief's firewall probed from a worker,
#                        and site.yml from nothing on the fresh-host image with an upgrade A -> B
#                        (part of `make test`)
#   make site INVENTORY=inventory/<name>  /  make teardown INVENTORY=inventory/<name>
# tests/ansible is part of `make test-fast` (pytest -m "not lab" tests); converging real nodes is the
# molecule lab's job (mk/lab.mk).
INVENTORY ?= inventory/example
ANSIBLE_PLAYBOOK := $(VENV)/bin/ansible-playbook
ANSIBLE_LINTED := site.yml teardown.yml playbooks roles inventory/example inventory/example-mpi
ANSIBLE_PYTHON := roles/pki/filter_plugins roles/aws_security_group/filter_plugins roles/port_forward/filter_plugins \
	roles/edgefed_install/files scripts/role_readme.py

.PHONY: ansible-check role-readmes test-ansible test-ansible-hosts test-ansible-fresh site teardown
ansible-check: setup ## ansible-lint (production profile), --syntax-check of the playbooks, role READMEs up to date
	$(VENV)/bin/ansible-lint --offline --profile production $(ANSIBLE_LINTED)
	$(ANSIBLE_PLAYBOOK) -i inventory/example --syntax-check site.yml teardown.yml
	$(VENV)/bin/ruff check $(ANSIBLE_PYTHON)
	$(VENV)/bin/mypy --strict --ignore-missing-imports $(ANSIBLE_PYTHON)
	$(PY) scripts/role_readme.py --check

role-readmes: setup ## regenerate roles/*/README.md from their argument specs
	$(PY) scripts/role_readme.py

test-ansible: setup ## tests/ansible: the playbooks' gates, pki, templates, validation (no hosts)
	$(PY) -m pytest -m "not lab" tests/ansible

# Two targets so that `make test` can run them side by side with the labs (the converge from nothing
# is the longest single module).
FRESH_CONVERGE_TESTS := tests/ansible/test_ansible_fresh_converge.py
test-ansible-hosts: setup lab-image ## site.yml --check, teardown and the firewall against containers of the lab image
	EDGEFED_LAB_IMAGE=$(LAB_IMAGE) $(PY) -m pytest -m lab tests/ansible --ignore=$(FRESH_CONVERGE_TESTS)

test-ansible-fresh: setup lab-image-fresh ## site.yml from nothing on fresh-host containers: converge, idempotence, upgrade A -> B, teardown
	EDGEFED_LAB_FRESH_IMAGE=$(LAB_FRESH_IMAGE) $(PY) -m pytest -m lab $(FRESH_CONVERGE_TESTS)

SLOW_TEST_TARGETS += test-ansible-fresh test-ansible-hosts

site: setup ## deploy: ansible-playbook -i $(INVENTORY) site.yml
	$(ANSIBLE_PLAYBOOK) -i $(INVENTORY) site.yml

teardown: setup ## undo site.yml: ansible-playbook -i $(INVENTORY) teardown.yml
	$(ANSIBLE_PLAYBOOK) -i $(INVENTORY) teardown.yml
