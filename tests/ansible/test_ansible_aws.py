"""The security-group role against moto's EC2 server on loopback (the AWS test double: AWS itself is
unreachable from here). It checks what the role asks of the EC2 API, not AWS's own behaviour."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from ansible_helpers import BIN, free_port, run_playbook, write_inventory

REGION = "eu-west-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "moto.log").open("w")
    server = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                _ec2(endpoint).describe_regions()
                break
            except Exception:
                time.sleep(0.1)
        else:
            pytest.fail(f"moto_server did not answer on {endpoint}")
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


def _ec2(endpoint: str) -> Any:
    return boto3.client("ec2", region_name=REGION, endpoint_url=endpoint,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture
def chief_instance(moto: str) -> dict[str, str]:
    ec2 = _ec2(moto)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    other = ec2.create_security_group(GroupName="operator-tools", Description="not ours", VpcId=vpc)["GroupId"]
    instance = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, SubnetId=subnet,
                                 SecurityGroupIds=[other])["Instances"][0]["InstanceId"]
    return {"vpc": vpc, "instance": instance, "other_group": other}


def _inventory(tmp_path: Path, settings: dict[str, Any], moto: str, instance: str) -> Path:
    return write_inventory(tmp_path / "hosts.yml", {
        **settings,
        "edgefed_aws_enabled": True,
        "edgefed_aws_region": REGION,
        "edgefed_aws_instance_id": instance,
        "edgefed_aws_endpoint_url": moto,
        "edgefed_operator_cidrs": ["192.0.2.0/24"],
    })


def _group(moto: str) -> dict[str, Any]:
    groups = _ec2(moto).describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["edgefed-chief"]}])["SecurityGroups"]
    assert len(groups) == 1
    return dict(groups[0])


def _rules(group: dict[str, Any]) -> dict[int, list[str]]:
    return {rule["FromPort"]: sorted(r["CidrIp"] for r in rule["IpRanges"]) for rule in group["IpPermissions"]}


def test_site_opens_the_port_and_teardown_closes_it(tmp_path: Path, settings: dict[str, Any], moto: str,
                                                    chief_instance: dict[str, str]) -> None:
    inventory = _inventory(tmp_path, settings, moto, chief_instance["instance"])
    run = run_playbook(tmp_path, inventory, "playbooks/validate.yml", "playbooks/aws.yml", env=CREDENTIALS)
    assert run.returncode == 0, run.output
    group = _group(moto)
    assert group["VpcId"] == chief_instance["vpc"]
    assert _rules(group) == {22: ["192.0.2.0/24"], 7777: ["198.51.100.0/24"]}
    attached = _ec2(moto).describe_instances(InstanceIds=[chief_instance["instance"]])
    groups = {g["GroupId"] for g in attached["Reservations"][0]["Instances"][0]["SecurityGroups"]}
    assert groups == {group["GroupId"], chief_instance["other_group"]}, "the instance lost a group"

    again = run_playbook(tmp_path, inventory, "playbooks/aws.yml", env=CREDENTIALS)
    assert again.returncode == 0, again.output
    assert again.changed() == 0, again.output

    # teardown.yml's first play (the chief's own plays need the host; --limit keeps to the controller).
    for _ in range(2):  # twice: the second run finds nothing to do
        down = run_playbook(tmp_path, inventory, "teardown.yml", args=("--tags", "aws_security_group"),
                            env=CREDENTIALS)
        assert down.returncode == 0, down.output
    assert down.changed() == 0, down.output
    group = _group(moto)
    assert _rules(group) == {22: ["192.0.2.0/24"]}
    other = _ec2(moto).describe_security_groups(GroupIds=[chief_instance["other_group"]])["SecurityGroups"][0]
    assert other["GroupName"] == "operator-tools"


def test_changed_source_cidrs_replace_the_rule(tmp_path: Path, settings: dict[str, Any], moto: str,
                                               chief_instance: dict[str, str]) -> None:
    inventory = _inventory(tmp_path, settings, moto, chief_instance["instance"])
    assert run_playbook(tmp_path, inventory, "playbooks/aws.yml", env=CREDENTIALS).returncode == 0
    moved = _inventory(tmp_path, {**settings, "edgefed_source_cidrs": ["203.0.113.0/28", "198.51.100.7/32"]},
                       moto, chief_instance["instance"])
    run = run_playbook(tmp_path, moved, "playbooks/aws.yml", env=CREDENTIALS)
    assert run.returncode == 0, run.output
    assert _rules(_group(moto))[7777] == ["198.51.100.7/32", "203.0.113.0/28"]


def test_unknown_instance_is_named(tmp_path: Path, settings: dict[str, Any], moto: str,
                                   chief_instance: dict[str, str]) -> None:
    inventory = _inventory(tmp_path, settings, moto, "i-0000000000000000f")
    run = run_playbook(tmp_path, inventory, "playbooks/aws.yml", env=CREDENTIALS)
    assert run.returncode != 0
    assert "aws_security_group_instance_id" in run.output or "i-0000000000000000f" in run.output, run.output
    groups = _ec2(moto).describe_security_groups(Filters=[{"Name": "group-name", "Values": ["edgefed-chief"]}])
    assert groups["SecurityGroups"] == []
