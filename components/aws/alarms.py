"""CloudWatch alarms an operator of the prod stack needs, all sent to one SNS topic.

* Metadata engine: MemoryDB memory use (JuiceFS metadata must never be evicted, and with
  `noeviction` a full node refuses writes); ElastiCache memory use on every node and replication
  lag on the replicas; or RDS free storage and memory.
* S3 replication: operations that failed to replicate to the second region (replication metrics are
  on in the bucket's replication rule).
JuiceFS mount health is not a CloudWatch metric: a dead mount turns the CAS server's `/status`
unready (its readiness probe), which the cluster's own monitoring sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.settings import AwsSettings

# Sustained for this many 5-minute periods before an alarm fires.
PERIOD_S = 300
PERIODS = 3
MEMORY_PERCENT = 80
REPLICATION_LAG_S = 30
# RDS free storage floor, as a share of the initial allocation: below the 10% at which storage
# autoscaling grows the volume, so it fires when autoscaling could not (at maxAllocatedStorageGb).
FREE_STORAGE_SHARE = 0.05
FREEABLE_MEMORY_BYTES = 512 * 2**20


@dataclass(frozen=True)
class Alarm:
    """One alarm: what it watches, when it fires and what it means for the CAS."""

    suffix: str
    namespace: str
    metric: str
    dimensions: dict[str, pulumi.Input[str]]
    comparison: str
    threshold: float
    statistic: str
    description: str
    # Consecutive breaching periods before it fires.
    periods: int = PERIODS


def elasticache_alarms(group_id: pulumi.Output[str], nodes: int) -> list[Alarm]:
    """Memory and lag on every node (any can be the replica after a failover; the primary reports no lag).

    ElastiCache names a group's nodes <group>-001, -002, ...
    """
    alarms = []
    for index in range(1, nodes + 1):
        node = pulumi.Output.concat(group_id, f"-{index:03d}")
        alarms.append(
            Alarm(
                f"memory-{index:03d}",
                "AWS/ElastiCache",
                "DatabaseMemoryUsagePercentage",
                {"CacheClusterId": node},
                "GreaterThanThreshold",
                MEMORY_PERCENT,
                "Maximum",
                f"JuiceFS metadata node {index} above {MEMORY_PERCENT}% memory: with noeviction, writes fail when "
                "full. Scale aws.elasticache.nodeType up.",
            )
        )
        alarms.append(
            Alarm(
                f"replication-lag-{index:03d}",
                "AWS/ElastiCache",
                "ReplicationLag",
                {"CacheClusterId": node},
                "GreaterThanThreshold",
                REPLICATION_LAG_S,
                "Maximum",
                f"JuiceFS metadata node {index}, a replica, over {REPLICATION_LAG_S} s behind: a failover now "
                "would lose that much acknowledged metadata.",
            )
        )
    return alarms


def memorydb_alarms(cluster_name: pulumi.Output[str], nodes: int) -> list[Alarm]:
    """Memory on every node of the one shard (MemoryDB names them <cluster>-0001-001, -002, ...)."""
    return [
        Alarm(
            f"memory-{index:03d}",
            "AWS/MemoryDB",
            "DatabaseMemoryUsagePercentage",
            {"ClusterName": cluster_name, "NodeName": pulumi.Output.concat(cluster_name, f"-0001-{index:03d}")},
            "GreaterThanThreshold",
            MEMORY_PERCENT,
            "Maximum",
            f"JuiceFS metadata node {index} above {MEMORY_PERCENT}% of MemoryDB's memory: with noeviction, "
            "writes fail when full. Scale aws.memorydb.nodeType up.",
        )
        for index in range(1, nodes + 1)
    ]


def rds_alarms(instance_id: pulumi.Output[str], allocated_gb: int) -> list[Alarm]:
    dimensions: dict[str, pulumi.Input[str]] = {"DBInstanceIdentifier": instance_id}
    return [
        Alarm(
            "free-storage",
            "AWS/RDS",
            "FreeStorageSpace",
            dimensions,
            "LessThanThreshold",
            allocated_gb * FREE_STORAGE_SHARE * 2**30,
            "Minimum",
            "JuiceFS metadata database nearly full: storage autoscaling could not grow it (at "
            "aws.rds.maxAllocatedStorageGb?).",
        ),
        Alarm(
            "freeable-memory",
            "AWS/RDS",
            "FreeableMemory",
            dimensions,
            "LessThanThreshold",
            FREEABLE_MEMORY_BYTES,
            "Minimum",
            "JuiceFS metadata database low on memory: scale aws.rds.instanceClass up.",
        ),
    ]


def s3_replication_alarms(
    source_bucket: pulumi.Output[str], replica_bucket: pulumi.Output[str], rule_id: str
) -> list[Alarm]:
    return [
        Alarm(
            "s3-replication-failures",
            "AWS/S3",
            "OperationsFailedReplication",
            {"SourceBucket": source_bucket, "DestinationBucket": replica_bucket, "RuleId": rule_id},
            "GreaterThanThreshold",
            0,
            "Sum",
            "Objects of the CAS bucket failed to replicate to the second region: the replica (and the "
            "metadata dumps in it) is incomplete. S3 never retries a failed replication.",
            # One failure is enough: it is never retried.
            periods=1,
        )
    ]


def register_alarms(
    name: str, alarms: list[Alarm], topic_arn: pulumi.Input[str], aws_settings: AwsSettings, parent: pulumi.Resource
) -> None:
    for alarm in alarms:
        aws.cloudwatch.MetricAlarm(
            f"{name}-{alarm.suffix}",
            alarm_description=alarm.description,
            namespace=alarm.namespace,
            metric_name=alarm.metric,
            dimensions=alarm.dimensions,
            statistic=alarm.statistic,
            period=PERIOD_S,
            evaluation_periods=alarm.periods,
            comparison_operator=alarm.comparison,
            threshold=alarm.threshold,
            # No data is no failure (a quiet bucket, a node being replaced).
            treat_missing_data="notBreaching",
            alarm_actions=[topic_arn],
            ok_actions=[topic_arn],
            region=aws_settings.region,
            opts=pulumi.ResourceOptions(parent=parent),
        )


def alarm_topic(name: str, aws_settings: AwsSettings, parent: pulumi.Resource) -> pulumi.Output[str]:
    """aws.alarmTopicArn, or a topic of the stack's own (subscribe to it: README, Prod)."""
    if aws_settings.alarm_topic_arn is not None:
        return pulumi.Output.from_input(aws_settings.alarm_topic_arn)
    # Not under the AWS-managed SNS key, to which CloudWatch cannot publish; notifications carry no data.
    topic = aws.sns.Topic(
        f"{name}-topic",
        display_name="NativeLink JuiceFS alarms",
        region=aws_settings.region,
        opts=pulumi.ResourceOptions(parent=parent),
    )
    return topic.arn


class StackAlarms(pulumi.ComponentResource):
    """The prod stack's alarms and where they go."""

    topic_arn: pulumi.Output[str]

    def __init__(
        self, name: str, aws_settings: AwsSettings, alarms: list[Alarm], opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("nativelink:monitoring:Alarms", name, None, opts)
        self.topic_arn = alarm_topic(name, aws_settings, self)
        register_alarms(name, alarms, self.topic_arn, aws_settings, self)
        self.register_outputs({"topicArn": self.topic_arn})
