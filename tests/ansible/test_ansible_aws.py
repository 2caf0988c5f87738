"""The security-group role against moto's EC2 server on loopback (the AWS test double: AWS itself is
unreachable from here). It checks what the role asks of the EC2 API, not AWS's own behaviour."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from ansible_helpers import BIN, free_port, run_playbook, write_inventory

REGION = "eu-west-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One moto_server for the module (its start-up imports all of moto: seconds on a loaded machine);
    each test gets it reset to a fresh account by the `moto` fixture."""
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("w")
    server = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                _ec2(endpoint).describe_regions()
                break
            except Exception:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not answer on {endpoint}")
                time.sleep(0.1)
        yield endpoint
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:  # terminate took longer than 10 s once at load 12
            server.kill()
            server.wait(timeout=30)
        log.close()


@pytest.fixture
def moto(moto_server: str) -> str:
    """The module's moto server, reset: every backend back to a new account's state (default VPC and all),
    so no test sees another's groups, VPCs or instances."""
    with urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"),
                                timeout=60) as answer:
        assert answer.status == 200
    ec2 = _ec2(moto_server)
    assert ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["edgefed-chief"]}])[
        "SecurityGroups"] == []
    assert ec2.describe_instances()["Reservations"] == []
    assert len(ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]) == 1
    return moto_server


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


def _interface_groups(moto: str, instance: str, device_index: int) -> set[str]:
    described = _ec2(moto).describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]
    [interface] = [i for i in described["NetworkInterfaces"] if i["Attachment"]["DeviceIndex"] == device_index]
    return {g["GroupId"] for g in interface["Groups"]}


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
    # AWS reports the primary interface's groups as the instance's (moto only on the interface).
    groups = _interface_groups(moto, chief_instance["instance"], device_index=0)
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


def _without_default_vpc(ec2: Any) -> None:
    """An organisation's account: no default VPC, so nothing may fall back to a default subnet."""
    for vpc in ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]:
        for subnet in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]:
            ec2.delete_subnet(SubnetId=subnet["SubnetId"])
        ec2.delete_vpc(VpcId=vpc["VpcId"])
    assert ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"] == []


@pytest.fixture
def two_interface_chief(moto: str) -> dict[str, str]:
    ec2 = _ec2(moto)
    _without_default_vpc(ec2)
    vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    front = ec2.create_subnet(VpcId=vpc, CidrBlock="10.1.1.0/24")["Subnet"]["SubnetId"]
    back = ec2.create_subnet(VpcId=vpc, CidrBlock="10.1.2.0/24")["Subnet"]["SubnetId"]
    tools = ec2.create_security_group(GroupName="operator-tools", Description="not ours", VpcId=vpc)["GroupId"]
    instance = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, NetworkInterfaces=[
        {"DeviceIndex": 0, "SubnetId": front, "Groups": [tools]},
        {"DeviceIndex": 1, "SubnetId": back, "Groups": [tools]}])["Instances"][0]
    addresses = {i["Attachment"]["DeviceIndex"]: i["PrivateIpAddress"] for i in instance["NetworkInterfaces"]}
    return {"vpc": vpc, "instance": instance["InstanceId"], "tools": tools,
            "primary_address": addresses[0], "second_address": addresses[1]}


@pytest.mark.parametrize("device_index", [0, 1])
def test_group_goes_on_the_interface_of_the_private_address_without_default_vpc(
        tmp_path: Path, settings: dict[str, Any], moto: str, two_interface_chief: dict[str, str],
        device_index: int) -> None:
    chief = two_interface_chief
    address = chief["second_address"] if device_index == 1 else "192.168.99.5"  # not on the instance: primary
    inventory = _inventory(tmp_path, {**settings, "edgefed_private_address": address}, moto, chief["instance"])
    run = run_playbook(tmp_path, inventory, "playbooks/aws.yml", env=CREDENTIALS)
    assert run.returncode == 0, run.output
    group = _group(moto)
    assert group["VpcId"] == chief["vpc"]
    assert _interface_groups(moto, chief["instance"], device_index) == {group["GroupId"], chief["tools"]}
    assert _interface_groups(moto, chief["instance"], 1 - device_index) == {chief["tools"]}
    again = run_playbook(tmp_path, inventory, "playbooks/aws.yml", env=CREDENTIALS)
    assert again.returncode == 0 and again.changed() == 0, again.output


def test_wider_rules_in_other_groups_fail_before_any_change_or_warn(
        tmp_path: Path, settings: dict[str, Any], moto: str, two_interface_chief: dict[str, str]) -> None:
    chief, ec2 = two_interface_chief, _ec2(moto)
    ec2.authorize_security_group_ingress(GroupId=chief["tools"], IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
        {"IpProtocol": "tcp", "FromPort": 3000, "ToPort": 4000, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]},
        # inside the inventory's CIDRs (198.51.100.0/24, 192.0.2.0/24): not reported
        {"IpProtocol": "tcp", "FromPort": 7777, "ToPort": 7777, "IpRanges": [{"CidrIp": "198.51.100.128/25"}]},
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "192.0.2.7/32"}]}])
    inventory = _inventory(tmp_path, settings, moto, chief["instance"])
    run = run_playbook(tmp_path, inventory, "playbooks/aws.yml", env=CREDENTIALS)
    assert run.returncode != 0, run.output
    assert f"{chief['tools']} (operator-tools) opens tcp/22 to 0.0.0.0/0" in run.output, run.output
    assert "opens tcp/3389 to 10.0.0.0/8" in run.output, run.output
    assert "198.51.100.128/25" not in run.output and "192.0.2.7/32" not in run.output, run.output
    assert ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["edgefed-chief"]}])["SecurityGroups"] == []

    warned = _inventory(tmp_path, {**settings, "aws_security_group_other_groups": "warn"}, moto, chief["instance"])
    run = run_playbook(tmp_path, warned, "playbooks/aws.yml", env=CREDENTIALS)
    assert run.returncode == 0, run.output
    assert "WARNING (aws_security_group_other_groups: warn)" in run.output, run.output
    assert _interface_groups(moto, chief["instance"], 0) == {_group(moto)["GroupId"], chief["tools"]}


def test_p2p_port_is_opened_and_closed_like_the_federation_port(
        tmp_path: Path, settings: dict[str, Any], moto: str, chief_instance: dict[str, str]) -> None:
    inventory = _inventory(tmp_path, {**settings, "edgefed_p2p_port": 7000}, moto, chief_instance["instance"])
    run = run_playbook(tmp_path, inventory, "playbooks/validate.yml", "playbooks/aws.yml", env=CREDENTIALS)
    assert run.returncode == 0, run.output
    assert _rules(_group(moto)) == {22: ["192.0.2.0/24"], 7000: ["198.51.100.0/24"], 7777: ["198.51.100.0/24"]}
    down = run_playbook(tmp_path, inventory, "teardown.yml", args=("--tags", "aws_security_group"), env=CREDENTIALS)
    assert down.returncode == 0, down.output
    assert _rules(_group(moto)) == {22: ["192.0.2.0/24"]}
