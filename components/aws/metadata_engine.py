"""The JuiceFS metadata engine that aws.metadataEngine names: MemoryDB, ElastiCache or RDS."""

from __future__ import annotations

import pulumi

from components.aws.elasticache import ElastiCacheMetadataEngine
from components.aws.memorydb import MemoryDbMetadataEngine
from components.aws.rds import RdsMetadataEngine
from components.settings import ProdSettings

AwsMetadataEngine = MemoryDbMetadataEngine | ElastiCacheMetadataEngine | RdsMetadataEngine

ENGINES: dict[str, type[AwsMetadataEngine]] = {
    "memorydb": MemoryDbMetadataEngine,
    "redis": ElastiCacheMetadataEngine,
    "postgres": RdsMetadataEngine,
}


def create_metadata_engine(name: str, settings: ProdSettings, opts: pulumi.ResourceOptions) -> AwsMetadataEngine:
    return ENGINES[settings.aws.metadata_engine](name, settings, opts=opts)
