"""The policy pack Pulumi runs for `pulumi preview --policy-pack policy`: every policy, mandatory.

Pulumi runs this file with the pack directory first on sys.path, so `nativelink_policies` imports as
a top-level module (tests import it the same way). Constructing PolicyPack starts the analyzer's gRPC
server and never returns: nothing but this entry point may do it.
"""

from nativelink_policies import PACK_NAME, POLICIES
from pulumi_policy import EnforcementLevel, PolicyPack

PolicyPack(PACK_NAME, enforcement_level=EnforcementLevel.MANDATORY, policies=POLICIES)
