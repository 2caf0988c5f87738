"""`edgefed doctor -i`'s security-group check against moto's EC2 server on loopback (the AWS test double,
started as tests/ansible/test_ansible_aws.py starts it): the group the playbooks make passes; a group
missing a source network, detached from the chief, or absent fails with one line and its fix; no
credentials skips the check; an EC2 endpoint that does not answer fails in one line."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgefed.ops.inventory import AwsTarget, load_inventory
from tests.conftest import free_port

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto")

REGION = "eu-west-1"
MOTO_SERVER = Path(sys.executable).parent / "moto_server"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Credentials for the double only; no profile files, no instance metadata lookups off loopback."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def moto(tmp_path: Path, aws_env: None) -> Iterator[str]:
    if not MOTO_SERVER.exists():
        pytest.skip("moto_server is not installed (requirements/tools.txt)")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with (tmp_path / "moto.log").open("w") as log:
        server = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    _ec2(endpoint).describe_regions()
                    break
                except Exception:
                    if time.monotonic() > deadline or server.poll() is not None:
                        pytest.fail(f"moto_server did not answer on {endpoint}")
                    time.sleep(0.1)
            yield endpoint
        finally:
            server.terminate()
            server.wait(timeout=10)


def _ec2(endpoint: str) -> Any:
    return boto3.client("ec2", region_name=REGION, endpoint_url=endpoint)


def _deployment(endpoint: str, cidrs: list[str], attach: bool = True) -> tuple[str, str]:
    """A chief instance and an edgefed-chief group opening 7777 to cidrs, as the role leaves them."""
    ec2 = _ec2(endpoint)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="edgefed-chief", Description="edgefed", VpcId=vpc)["GroupId"]
    permissions = [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "192.0.2.0/24"}]}]
    if cidrs:
        permissions.append({"IpProtocol": "tcp", "FromPort": 7777, "ToPort": 7777,
                            "IpRanges": [{"CidrIp": cidr} for cidr in cidrs]})
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=permissions)
    other = ec2.create_security_group(GroupName="operator-tools", Description="not ours", VpcId=vpc)["GroupId"]
    instance = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, SubnetId=subnet,
                                 SecurityGroupIds=[group, other] if attach else [other])["Instances"][0]["InstanceId"]
    return instance, group


def _target(endpoint: str, instance: str, cidrs: tuple[str, ...] = ("198.51.100.0/24", "203.0.113.0/24")) -> Any:
    return AwsTarget(region=REGION, instance_id=instance, group_name="edgefed-chief", port=7777,
                     source_cidrs=cidrs, endpoint_url=endpoint)


def _check(target: Any) -> Any:
    from edgefed.ops.doctor_aws import check_security_group

    return check_security_group(target, timeout=3.0)


def test_the_group_the_playbooks_make_passes(moto: str) -> None:
    instance, group = _deployment(moto, ["198.51.100.0/24", "203.0.113.0/24"])
    check = _check(_target(moto, instance))
    assert check.ok is True, check
    assert group in check.detail and "tcp/7777" in check.detail and instance in check.detail


def test_a_network_missing_from_the_rule_is_named_with_the_fix(moto: str) -> None:
    instance, group = _deployment(moto, ["198.51.100.0/24"])
    check = _check(_target(moto, instance))
    assert check.ok is False
    assert check.detail == f"edgefed-chief ({group}) does not open tcp/7777 to 203.0.113.0/24"
    assert "--tags aws_security_group" in check.fix
    assert (f"aws ec2 authorize-security-group-ingress --group-id {group} --protocol tcp --port 7777"
            " --cidr 203.0.113.0/24") in check.fix
    assert "\n" not in check.detail + check.fix  # one line


def test_no_rule_for_the_port_at_all(moto: str) -> None:
    instance, _ = _deployment(moto, [])
    check = _check(_target(moto, instance, ("198.51.100.0/24",)))
    assert check.ok is False and "does not open tcp/7777 to 198.51.100.0/24" in check.detail


def test_a_group_detached_from_the_chief(moto: str) -> None:
    instance, group = _deployment(moto, ["198.51.100.0/24", "203.0.113.0/24"], attach=False)
    check = _check(_target(moto, instance))
    assert check.ok is False
    assert check.detail == f"edgefed-chief ({group}) is not attached to the chief's instance {instance}"
    assert "aws_security_group" in check.fix


def test_a_wrong_instance_id(moto: str) -> None:
    _deployment(moto, ["198.51.100.0/24"])
    check = _check(_target(moto, "i-0123456789abcdef0"))
    assert check.ok is False and "i-0123456789abcdef0 not found" in check.detail
    assert "edgefed_aws_instance_id" in check.fix


def test_no_credentials_skips_the_check(monkeypatch: pytest.MonkeyPatch, aws_env: None) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    check = _check(_target(f"http://127.0.0.1:{free_port()}", "i-0123456789abcdef0"))
    assert check.ok is None and "no AWS credentials" in check.detail


def test_an_endpoint_that_does_not_answer_fails_in_one_line(aws_env: None) -> None:
    check = _check(_target(f"http://127.0.0.1:{free_port()}", "i-0123456789abcdef0"))
    assert check.ok is False and check.detail.startswith("the EC2 API did not answer")
    assert "\n" not in check.detail


def test_the_inventory_gives_the_chief_its_aws_target(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  vars:\n    edgefed_aws_enabled: true\n    edgefed_aws_region: eu-west-1\n"
        "    edgefed_aws_instance_id: i-0abc\n    edgefed_aws_endpoint_url: http://127.0.0.1:5000\n"
        "    edgefed_source_cidrs: [198.51.100.0/24]\n    edgefed_public_port: 7000\n"
        "  children:\n    chief:\n      hosts:\n        c1: {}\n    workers:\n      hosts:\n        w1: {}\n"
    )
    chief, worker = load_inventory(inventory)
    assert chief.aws == AwsTarget(region="eu-west-1", instance_id="i-0abc", group_name="edgefed-chief", port=7000,
                                  source_cidrs=("198.51.100.0/24",), endpoint_url="http://127.0.0.1:5000")
    assert worker.aws is None
    inventory.write_text(inventory.read_text().replace("edgefed_aws_enabled: true", "edgefed_aws_enabled: false"))
    assert load_inventory(inventory)[0].aws is None
