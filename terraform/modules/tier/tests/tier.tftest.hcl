# The composition with mock providers: the wiring between the modules, the ansible_inventory
# contract and the checks that span modules. Each module has its own tests; the whole tier is
# applied against moto_server by tests/terraform/test_apply_moto.py.

mock_provider "aws" {
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{}" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_data "aws_region" {
    defaults = { name = "us-east-1" }
  }
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }
  mock_resource "aws_db_instance" {
    defaults = {
      arn     = "arn:aws:rds:us-east-1:123456789012:db:dbtier-test"
      address = "dbtier-test.abc.us-east-1.rds.amazonaws.com"
    }
  }
  mock_resource "aws_s3_bucket" {
    defaults = { arn = "arn:aws:s3:::mock-bucket" }
  }
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:us-east-1:123456789012:key/mrk-mock" }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/mock" }
  }
  mock_resource "aws_iam_policy" {
    defaults = { arn = "arn:aws:iam::123456789012:policy/mock" }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:us-east-1:123456789012:log-group:mock" }
  }
  mock_resource "aws_lb" {
    defaults = { arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/mock/1", dns_name = "mock-nlb.elb.us-east-1.amazonaws.com" }
  }
  mock_resource "aws_lb_target_group" {
    defaults = { arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/mock/1" }
  }
  mock_resource "aws_instance" {
    defaults = { id = "i-0123456789abcdef0", private_ip = "10.40.1.10" }
  }
  mock_resource "aws_sns_topic" {
    defaults = { arn = "arn:aws:sns:us-east-1:123456789012:dbtier-test-alerts" }
  }
}

mock_provider "aws" {
  alias = "dr"
  mock_data "aws_region" {
    defaults = { name = "eu-west-1" }
  }
  mock_resource "aws_kms_replica_key" {
    defaults = { arn = "arn:aws:kms:eu-west-1:123456789012:key/mrk-mock" }
  }
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:eu-west-1:123456789012:key/dr-mock" }
  }
  mock_resource "aws_s3_bucket" {
    defaults = { arn = "arn:aws:s3:::mock-bucket-dr" }
  }
}

variables {
  project                  = "dbtier"
  environment              = "test"
  availability_zones       = ["us-east-1a", "us-east-1b"]
  vpc_cidr                 = "10.40.0.0/16"
  private_subnet_cidrs     = ["10.40.1.0/24", "10.40.2.0/24"]
  app_cidr_blocks          = ["10.40.100.0/22"]
  db_instance_class        = "db.t4g.medium"
  db_allocated_storage     = 50
  db_max_allocated_storage = 200
  db_backup_retention_days = 7
  backup_bucket_name       = "dbtier-test-backups"
  backup_dr_bucket_name    = "dbtier-test-backups-dr"
  ssm_bucket_name          = "dbtier-test-ssm"
  pgbouncer_instance_type  = "t3.small"
  ops_instance_type        = "t3.medium"
  ami_id                   = "ami-0123456789abcdef0"
}

run "inventory_contract" {
  command = apply

  assert {
    condition = alltrue([
      for k in [
        "ansible_connection", "ansible_aws_ssm_bucket_name", "ansible_aws_ssm_region",
        "dbtier_db_host", "dbtier_db_port", "dbtier_db_name", "dbtier_backup_bucket", "dbtier_backup_dr_bucket",
        "dbtier_backup_region", "dbtier_dr_region", "dbtier_kms_key_id", "dbtier_backup_prefix",
        "dbtier_secondary_repository", "dbtier_secondary_region", "dbtier_retention_days",
        "postgresql_allowed_cidrs", "dbtier_vpc_cidr", "dbtier_postgresql_major", "dbtier_rds_restore_prefix",
        "pgbouncer_health_port", "pgbouncer_health_path", "dbtier_alerts_sns_topic_arn", "monitoring_node_exporter_port",
      ] : contains(keys(output.ansible_inventory.vars), k)
    ])
    error_message = "ansible_inventory.vars misses a variable the Ansible side reads"
  }
  assert {
    condition     = output.ansible_inventory.vars.dbtier_secondary_repository == "s3://${output.backup_dr_bucket}/dbtier/" && output.ansible_inventory.vars.dbtier_secondary_region == "eu-west-1"
    error_message = "the DR repository is s3://<DR bucket>/<prefix> in the DR region"
  }
  assert {
    condition     = output.ansible_inventory.vars.dbtier_retention_days == 30 && output.backup_retention_days == 30
    error_message = "dbtier_retention_days is the retention the lifecycle was checked against (default 30)"
  }
  assert {
    condition     = output.ansible_inventory.vars.postgresql_allowed_cidrs == tolist(["10.40.1.0/24", "10.40.2.0/24"]) && output.ansible_inventory.vars.dbtier_vpc_cidr == "10.40.0.0/16"
    error_message = "postgresql_allowed_cidrs follows the private subnets"
  }
  assert {
    condition     = output.ansible_inventory.vars.dbtier_postgresql_major == 15 && output.postgresql_major == 15
    error_message = "dbtier_postgresql_major follows db_engine_version"
  }
  assert {
    condition     = output.ansible_inventory.vars.pgbouncer_health_port == 8008 && output.ansible_inventory.vars.pgbouncer_health_path == "/health"
    error_message = "the health endpoint Ansible serves is the one the NLB checks"
  }
  assert {
    condition     = output.ansible_inventory.vars.ansible_connection == "amazon.aws.aws_ssm" && output.ansible_inventory.vars.ansible_aws_ssm_bucket_name == "dbtier-test-ssm" && output.ansible_inventory.vars.ansible_aws_ssm_region == "us-east-1"
    error_message = "Ansible connects over SSM with the tier's transfer bucket"
  }
  assert {
    condition = alltrue(flatten([
      for g in ["pgbouncer", "ops"] : [
        for name, h in output.ansible_inventory.groups[g] : h.ansible_aws_ssm_instance_id == h.ec2_instance_id && output.instance_ids[name] == h.ec2_instance_id
      ]
    ]))
    error_message = "every host carries its instance id for the SSM connection"
  }
  assert {
    condition     = length(output.instance_ids) == 3 && length(module.ssm_access.controller_policy_arn) > 0
    error_message = "two PgBouncer hosts and the ops host, all reachable by the controller policy"
  }
  assert {
    condition     = output.ansible_inventory.vars.dbtier_rds_restore_prefix == "dbtier-test-pitr-" && output.rds_restore_instance_prefix == "dbtier-test-pitr-"
    error_message = "point-in-time restores are named <identifier>-pitr-*"
  }
}

run "every_environment_gets_an_alert_topic" {
  command = apply

  variables {
    alert_email_addresses = ["oncall-dbtier@example.com"]
    alarm_sns_topic_arns  = ["arn:aws:sns:us-east-1:123456789012:paging"]
  }

  assert {
    condition     = output.alerts_sns_topic_arn == "arn:aws:sns:us-east-1:123456789012:dbtier-test-alerts" && output.ansible_inventory.vars.dbtier_alerts_sns_topic_arn == output.alerts_sns_topic_arn
    error_message = "the alert topic is an output and reaches Ansible as dbtier_alerts_sns_topic_arn"
  }
  assert {
    condition     = keys(module.alerting.email_subscription_arns) == ["oncall-dbtier@example.com"]
    error_message = "alert_email_addresses are subscribed to the topic"
  }
  assert {
    condition     = length(module.rds.alarm_arns) == 3 && length(module.pgbouncer_hosts.alarm_arns) == 4 && length(module.ops_host.alarm_arns) == 1
    error_message = "RDS (3), PgBouncer status checks (2) and NLB (2), ops status check (1) alarms"
  }
  assert {
    condition     = output.ansible_inventory.vars.monitoring_node_exporter_port == 9100
    error_message = "the node exporter port the security groups open reaches Ansible"
  }
}

run "health_port_is_one_value" {
  command = plan
  variables {
    pgbouncer_health_port = 8010
  }
  assert {
    condition     = module.network.pgbouncer_security_group_id != "" && output.pgbouncer_health_check.port == 8010 && output.ansible_inventory.vars.pgbouncer_health_port == 8010
    error_message = "one pgbouncer_health_port for the NLB, the security group and Ansible"
  }
}

run "no_way_out_unless_asked" {
  command = plan
  assert {
    condition     = length(module.network.nat_gateway_ids) == 0
    error_message = "no NAT gateway by default"
  }
}

# Staging kept backups 14 days in S3 while dbtier keeps them 30: the plan must refuse that.
run "rejects_lifecycle_shorter_than_retention" {
  command = plan
  variables {
    backup_retention_days  = 30
    backup_expiration_days = 14
  }
  expect_failures = [var.backup_expiration_days]
}

run "rejects_lifecycle_without_margin" {
  command = plan
  variables {
    backup_retention_days        = 30
    backup_retention_margin_days = 1
    backup_expiration_days       = 30
  }
  expect_failures = [var.backup_expiration_days]
}

run "rejects_a_zero_margin" {
  command = plan
  variables {
    backup_retention_margin_days = 0
  }
  expect_failures = [var.backup_retention_margin_days]
}

run "rejects_short_noncurrent_versions" {
  command = plan
  variables {
    backup_noncurrent_expiration_days = 7
  }
  expect_failures = [var.backup_noncurrent_expiration_days]
}
