#!/usr/bin/env python3
"""Transforms a SAM template to plain CloudFormation offline, as CloudFormation's own
AWS::Serverless transform would, so that cfn-lint can check the resources SAM generates
(cfn-lint on the SAM template alone misses wrong Runtime, Architectures or
FunctionResponseTypes values, for instance).

Usage: sam_to_cfn.py TEMPLATE.yaml OUT.json     (needs aws-sam-translator; scripts/lint-infra
installs it). Exits non-zero, naming the resource, when SAM refuses the template.
"""

import json
import os
import sys

from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

# Stands in for `sam package`: a local CodeUri becomes an S3 location.
PLACEHOLDER_CODE_URI = "s3://placeholder-bucket/code.zip"


class NoManagedPolicies:
    """SAM policy templates resolve locally; only bare AWS managed-policy names would need
    an IAM lookup, and this template uses none."""

    def load(self):
        return {}


def main(source: str, destination: str) -> int:
    # The transform fills AWS::Region into ARNs it builds; any region will do offline.
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with open(source, encoding="utf-8") as f:
        template = yaml_parse(f.read())
    for resource in template.get("Resources", {}).values():
        properties = resource.get("Properties") or {}
        code_uri = properties.get("CodeUri")
        if resource.get("Type") == "AWS::Serverless::Function" and (
            code_uri is None or (isinstance(code_uri, str) and not code_uri.startswith("s3://"))
        ):
            properties["CodeUri"] = PLACEHOLDER_CODE_URI
            resource["Properties"] = properties
    # A CodeUri in Globals is local too.
    function_globals = template.get("Globals", {}).get("Function", {})
    if isinstance(function_globals.get("CodeUri"), str) and not function_globals["CodeUri"].startswith("s3://"):
        function_globals["CodeUri"] = PLACEHOLDER_CODE_URI
    try:
        output = transform(template, {}, NoManagedPolicies())
    except InvalidDocumentException as err:
        for cause in err.causes:
            print(f"{source}: SAM transform: {cause.message}", file=sys.stderr)
        return 1
    with open(destination, "w", encoding="utf-8") as f:
        json.dump(output, f, indent=1, sort_keys=False)
        f.write("\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
