"""s3_public_access: every bucket has a full public access block and grants nothing to everyone."""

import json

import pytest

from policies.rules import s3_public_access
from policy_builders import res, urn

BUCKET = "aws:s3/bucket:Bucket"
PAB = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
ALL_ON = {"blockPublicAcls": True, "blockPublicPolicy": True, "ignorePublicAcls": True, "restrictPublicBuckets": True}
STORE = urn("vllm-fleet:index:LoraStore", "loras")
B_URN = urn(BUCKET, "loras-bucket")


def bucket(**props):
    return res(BUCKET, "loras-bucket", {"bucket": "acme-loras", **props}, parent=STORE)


def block(ref="acme-loras", parent=STORE, **settings):
    return res(PAB, "loras-public-access", {"bucket": ref, **{**ALL_ON, **settings}}, parent=parent)


NO_BLOCK = (
    "S3 bucket 'loras-bucket' has no public access block with all four settings true "
    "(blockPublicAcls, blockPublicPolicy, ignorePublicAcls, restrictPublicBuckets)"
)
TLS_ONLY = json.dumps(
    {"Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}
)

CASES = [
    ("blocked-by-name", [bucket(), block()], []),
    ("blocked-by-the-mock-id", [res(BUCKET, "loras-bucket", {}, parent=STORE, id="loras-bucket-id"), block("loras-bucket-id", parent=None)], []),
    ("blocked-sibling-when-the-name-is-unknown", [res(BUCKET, "loras-bucket", {}, parent=STORE), block("<computed>")], []),
    ("account-wide-block", [bucket(), res("aws:s3/accountPublicAccessBlock:AccountPublicAccessBlock", "account", ALL_ON)], []),
    ("tls-only-deny-policy-is-fine", [bucket(), block(), res("aws:s3/bucketPolicy:BucketPolicy", "p", {"bucket": "acme-loras", "policy": TLS_ONLY})], []),
    ("no-block", [bucket()], [NO_BLOCK]),
    ("block-for-another-bucket", [bucket(), block("someone-else", parent=None)], [NO_BLOCK]),
    ("public-canned-acl", [bucket(acl="public-read"), block()], ["S3 bucket 'loras-bucket' has the public ACL 'public-read'"]),
    (
        "acl-resource-granting-all-users",
        [
            bucket(),
            block(),
            res(
                "aws:s3/bucketAcl:BucketAcl",
                "acl",
                {
                    "bucket": "acme-loras",
                    "accessControlPolicy": {
                        "grants": [{"grantee": {"type": "Group", "uri": "http://acs.amazonaws.com/groups/global/AllUsers"}, "permission": "READ"}],
                        "owner": {"id": "abc"},
                    },
                },
            ),
        ],
        ["S3 bucket 'loras-bucket' grants READ to AllUsers"],
    ),
    (
        "policy-allowing-everyone",
        [
            bucket(),
            block(),
            res(
                "aws:s3/bucketPolicy:BucketPolicy",
                "p",
                {"bucket": "acme-loras", "policy": json.dumps({"Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": ["s3:GetObject"]}]})},
            ),
        ],
        ['S3 bucket \'loras-bucket\': its bucket policy allows s3:GetObject to everyone (Principal "*") without a condition'],
    ),
]


@pytest.mark.parametrize("resources, messages", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_public_access(resources, messages):
    findings = s3_public_access.check(resources)
    assert [f.message for f in findings] == messages
    assert all(f.urn == B_URN for f in findings)


def test_no_buckets_no_findings():
    assert s3_public_access.check([block()]) == []


PAB_URN = urn(PAB, "loras-public-access")
OFF_CASES = [
    ("two-settings-false", [bucket(), block(blockPublicPolicy=False, restrictPublicBuckets=False)], "blockPublicPolicy, restrictPublicBuckets"),
    *[(f"{flag}-false", [bucket(), block(**{flag: False})], flag) for flag in ALL_ON],
    ("a-setting-unset", [bucket(), res(PAB, "loras-public-access", {"bucket": "acme-loras", "blockPublicAcls": True}, parent=STORE)],
     "blockPublicPolicy, ignorePublicAcls, restrictPublicBuckets"),
    ("the-bucket-is-not-in-the-stack", [block(ignorePublicAcls=False)], "ignorePublicAcls"),
    ("under-an-account-wide-block", [bucket(), block(blockPublicAcls=False), res("aws:s3/accountPublicAccessBlock:AccountPublicAccessBlock", "account", ALL_ON)], "blockPublicAcls"),
    ("string-false-as-some-providers-send-it", [bucket(), block(restrictPublicBuckets="false")], "restrictPublicBuckets"),
]


@pytest.mark.parametrize("resources, off", [c[1:] for c in OFF_CASES], ids=[c[0] for c in OFF_CASES])
def test_a_block_with_any_setting_off_is_reported_on_the_block(resources, off):
    """Reported once, on the access block (the bucket is not reported again for having no block)."""
    assert s3_public_access.check(resources) == [
        (PAB_URN, f"S3 public access block 'loras-public-access' for bucket 'acme-loras' leaves {off} off (false or unset); set all four true")
    ]
