"""nativelink-juicefs: a NativeLink remote-execution cluster whose CAS lives on JuiceFS."""

import pulumi

from components.stack import all_config, build_stack, read_secrets, read_settings

config = pulumi.Config()
settings = read_settings(config, all_config())
for name, value in build_stack(settings, read_secrets(config)).items():
    pulumi.export(name, value)
