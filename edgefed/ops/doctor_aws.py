"""`edgefed doctor -i`: the chief's AWS security group, checked where AWS credentials exist.

The playbooks (role aws_security_group) open the federation port (edgefed_public_port) from
edgefed_source_cidrs in a group named aws_security_group_name (edgefed-chief) attached to the chief's
instance (edgefed_aws_instance_id). The doctor asks the EC2 API whether that is still so; a group
edited by hand in the console or detached from the instance is a classic "the Pis cannot reach the
chief" that nothing on the hosts shows. Without credentials, or without boto3, the check is skipped
(not failed): the operator's machine is often not the one holding AWS keys.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from edgefed.ops.doctor import Check
from edgefed.ops.inventory import AwsTarget

NAME = "security group"
PLAYBOOK_FIX = "ansible-playbook site.yml --tags aws_security_group (role aws_security_group)"


def check_security_group(target: AwsTarget, timeout: float = 10.0) -> Check:
    """One line: the rule is there and the group attached, or what is wrong and the fix."""
    if target.unresolved is not None:
        return Check(NAME, False, f"the inventory's AWS variables cannot be read: {target.unresolved}",
                     "fix edgefed_aws_* in the inventory (or set edgefed_aws_enabled: false)")
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return Check(NAME, None, "boto3 is not installed here: not checked (pip install boto3)")
    try:
        session = boto3.Session(profile_name=target.profile or None, region_name=target.region)
        if session.get_credentials() is None:
            return Check(NAME, None, "no AWS credentials here (environment, profile or instance role): not checked")
        config = Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 2})
        ec2 = session.client("ec2", endpoint_url=target.endpoint_url or None, config=config)
        return _judge(target, ec2)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code, message = error.get("Code", "?"), error.get("Message", str(exc))
        if code in ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"):
            return Check(NAME, False, f"instance {target.instance_id} not found in {target.region}: {message}",
                         "set edgefed_aws_instance_id and edgefed_aws_region to the chief's instance")
        return Check(NAME, False, f"the EC2 API refused: {code}: {message}",
                     "check the AWS credentials (ec2:DescribeInstances, ec2:DescribeSecurityGroups) and"
                     " edgefed_aws_region")
    except BotoCoreError as exc:
        return Check(NAME, False, f"the EC2 API did not answer: {exc}",
                     "check the network to EC2 (or edgefed_aws_endpoint_url) and the AWS credentials")


def _judge(target: AwsTarget, ec2: Any) -> Check:
    reservations = ec2.describe_instances(InstanceIds=[target.instance_id]).get("Reservations", [])
    instances = [instance for reservation in reservations for instance in reservation.get("Instances", [])]
    if not instances:
        return Check(NAME, False, f"instance {target.instance_id} not found in {target.region}",
                     "set edgefed_aws_instance_id and edgefed_aws_region to the chief's instance")
    attached = {group["GroupId"] for group in instances[0].get("SecurityGroups", [])}
    groups = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [target.group_name]}]).get("SecurityGroups", [])
    if not groups:
        return Check(NAME, False, f"no security group named {target.group_name} in {target.region}", PLAYBOOK_FIX)
    group = next((g for g in groups if g["GroupId"] in attached), None)
    if group is None:
        return Check(NAME, False, f"{target.group_name} ({groups[0]['GroupId']}) is not attached to the chief's"
                     f" instance {target.instance_id}", PLAYBOOK_FIX)
    missing = [cidr for cidr in target.source_cidrs if not _opened(group, target.port, cidr)]
    where = f"{target.group_name} ({group['GroupId']})"
    if missing:
        manual = " or: " + "; ".join(
            f"aws ec2 authorize-security-group-ingress --group-id {group['GroupId']} --protocol tcp"
            f" --port {target.port} --cidr {cidr}" for cidr in missing)
        return Check(NAME, False, f"{where} does not open tcp/{target.port} to {', '.join(missing)}",
                     PLAYBOOK_FIX + manual)
    sources = ", ".join(target.source_cidrs) or "no source network (edgefed_source_cidrs is empty)"
    return Check(NAME, True, f"{where} opens tcp/{target.port} to {sources}, attached to {target.instance_id}")


def _opened(group: dict[str, Any], port: int, cidr: str) -> bool:
    """A rule of the group admits tcp/port from every address of cidr."""
    wanted = ipaddress.ip_network(cidr, strict=False)
    for rule in group.get("IpPermissions", []):
        protocol = rule.get("IpProtocol")
        if protocol not in ("tcp", "6", "-1"):
            continue
        if protocol != "-1" and not rule.get("FromPort", 0) <= port <= rule.get("ToPort", -1):
            continue
        ranges = [r.get("CidrIp") for r in rule.get("IpRanges", [])] + [
            r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])]
        for opened in ranges:
            try:
                network = ipaddress.ip_network(opened or "", strict=False)
            except ValueError:
                continue
            if network.version == wanted.version and wanted.subnet_of(network):  # type: ignore[arg-type]
                return True
    return False
