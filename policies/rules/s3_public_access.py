"""S3 buckets are never public.

A stack rule (the settings live in resources beside the bucket). For every `aws:s3/bucket:Bucket`
(or the older `aws:s3/bucketV2:BucketV2`):
- an `aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock` for it with all four settings true (or an
  `aws:s3/accountPublicAccessBlock:AccountPublicAccessBlock` with all four true in the stack);
- no public canned ACL (public-read, public-read-write, authenticated-read) on the bucket or an
  `aws:s3/bucketAcl:BucketAcl`, and no grant to the AllUsers / AuthenticatedUsers groups;
- no bucket policy statement that allows everyone (Principal "*") without a condition.

Every `aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock` with any of the four settings false or unset (the
provider's default for each is false) is reported on its own URN, whether or not its bucket is in the stack
(an imported or pre-existing bucket) and even under an account-wide block: a block that turns a setting off
says the bucket is meant to be reachable, and removing the account block would make it so.

A bucket-level resource belongs to a bucket when its `bucket` input is the bucket's name or id, or, when the
name is not known yet, when it is the only bucket under the same parent component.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from policies import resource_views as rv

BUCKET_TYPES = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")
ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
ACCOUNT_ACCESS_BLOCK = "aws:s3/accountPublicAccessBlock:AccountPublicAccessBlock"
ACL_TYPES = ("aws:s3/bucketAcl:BucketAcl", "aws:s3/bucketAclV2:BucketAclV2")
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
BLOCK_SETTINGS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
PUBLIC_ACLS = ("public-read", "public-read-write", "authenticated-read")
PUBLIC_GROUPS = {
    "http://acs.amazonaws.com/groups/global/AllUsers": "AllUsers",
    "http://acs.amazonaws.com/groups/global/AuthenticatedUsers": "AuthenticatedUsers",
}


def bucket_refs(bucket: rv.Resource) -> set[str]:
    """What other resources' `bucket` input may hold for this bucket."""
    refs = {rv.dig(bucket.props, "bucket"), rv.dig(bucket.props, "id"), bucket.id}
    return {str(r) for r in refs if r}


def owner_of(resource: rv.Resource, buckets: list[rv.Resource]) -> rv.Resource | None:
    """The bucket a bucket-level resource (access block, ACL, policy, encryption) configures."""
    ref = rv.dig(resource.props, "bucket")
    for bucket in buckets:
        if ref and str(ref) in bucket_refs(bucket):
            return bucket
    siblings = [b for b in buckets if resource.parent and b.parent == resource.parent]
    return siblings[0] if len(siblings) == 1 else None


def settings_off(block: rv.Resource) -> list[str]:
    """The public access block settings not set to true."""
    return [s for s in BLOCK_SETTINGS if not rv.as_bool(rv.dig(block.props, s))]


def check(resources: Iterable[rv.Resource]) -> list[rv.Finding]:
    resources = list(resources)
    buckets = [r for r in resources if r.type in BUCKET_TYPES]
    findings: list[rv.Finding] = []
    for block in (r for r in resources if r.type == ACCESS_BLOCK):
        off = settings_off(block)
        if off:
            target = rv.dig(block.props, "bucket")
            of = f" for bucket {str(target)!r}" if target else ""
            findings.append(rv.Finding(block.urn, f"S3 public access block {block.name!r}{of} leaves {', '.join(off)} off (false or unset); set all four true"))
    if not buckets:
        return findings
    account_blocked = any(
        r.type == ACCOUNT_ACCESS_BLOCK and all(rv.as_bool(rv.dig(r.props, s)) for s in BLOCK_SETTINGS) for r in resources
    )
    blocks: dict[str, list[rv.Resource]] = {}
    acls: dict[str, list[rv.Resource]] = {}
    policies: dict[str, list[rv.Resource]] = {}
    for res in resources:
        target = {ACCESS_BLOCK: blocks, BUCKET_POLICY: policies, **{t: acls for t in ACL_TYPES}}.get(res.type)
        if target is None:
            continue
        owner = owner_of(res, buckets)
        if owner is not None:
            target.setdefault(owner.urn or owner.name, []).append(res)

    for bucket in buckets:
        key = bucket.urn or bucket.name
        label = f"S3 bucket {bucket.name!r}"
        if not account_blocked:
            if not blocks.get(key):  # a block of its own with settings off is reported above, on the block
                findings.append(rv.Finding(bucket.urn, f"{label} has no public access block with all four settings true ({', '.join(BLOCK_SETTINGS)})"))
        for source in [bucket, *acls.get(key, [])]:
            acl = rv.dig(source.props, "acl")
            if acl in PUBLIC_ACLS:
                findings.append(rv.Finding(bucket.urn, f"{label} has the public ACL {acl!r}"))
            grants = rv.as_list(rv.dig(source.props, "grants", default=[]))
            grants += rv.as_list(rv.dig(source.props, "accessControlPolicy", "grants", default=[]))
            for grant in grants:
                uri = rv.dig(grant, "uri") or rv.dig(grant, "grantee", "uri")
                if uri in PUBLIC_GROUPS:
                    perms = rv.dig(grant, "permission") or ", ".join(str(p) for p in rv.as_list(rv.dig(grant, "permissions", default=[])))
                    findings.append(rv.Finding(bucket.urn, f"{label} grants {perms} to {PUBLIC_GROUPS[uri]}"))
        for source in [bucket, *policies.get(key, [])]:
            for actions in public_statements(rv.dig(source.props, "policy")):
                findings.append(
                    rv.Finding(bucket.urn, f'{label}: its bucket policy allows {actions} to everyone (Principal "*") without a condition')
                )
    return findings


def public_statements(policy) -> list[str]:
    """Actions of the Allow statements open to everyone with no Condition."""
    policy = rv.scalar(policy)
    if isinstance(policy, str):
        try:
            policy = json.loads(policy)
        except ValueError:
            return []
    out = []
    statements = rv.dig(policy, "Statement", default=[])
    for stmt in rv.as_list(statements) if rv.is_list(statements) else [statements]:
        if rv.dig(stmt, "Effect") != "Allow" or rv.dig(stmt, "Condition"):
            continue
        principal = rv.dig(stmt, "Principal")
        aws = rv.dig(principal, "AWS")
        everyone = principal == "*" or aws == "*" or (rv.is_list(aws) and "*" in list(aws))
        if everyone:
            action = rv.dig(stmt, "Action", default="*")
            out.append(", ".join(str(a) for a in action) if rv.is_list(action) else str(action))
    return out
