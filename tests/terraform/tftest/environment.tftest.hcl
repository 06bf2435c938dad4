# Copied by tests/terraform/test_static.py into a copy of each environment (never into the real
# tree) and run with `terraform test`: the environment's real terraform.tfvars through the whole
# tier, against mock providers. It catches what `terraform validate` cannot: values in the tfvars
# that a module refuses (a lifecycle shorter than the retention, a NAT gateway without a public
# subnet, ...), and outputs the inventory script reads.

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
  mock_data "aws_ami" {
    defaults = { id = "ami-0123456789abcdef0" }
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

run "tfvars_pass_every_check" {
  command = plan

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
    condition     = output.ansible_inventory.vars.dbtier_retention_days == var.backup_retention_days && output.backup_expiration_days == var.backup_expiration_days
    error_message = "dbtier_retention_days is the environment's backup_retention_days"
  }
  assert {
    condition     = output.ansible_inventory.vars.dbtier_secondary_repository == "s3://${var.backup_dr_bucket_name}/dbtier/" && output.ansible_inventory.vars.dbtier_secondary_region == var.dr_region
    error_message = "the DR repository is the environment's DR bucket in its DR region"
  }
  assert {
    condition     = output.ansible_inventory.vars.postgresql_allowed_cidrs == var.private_subnet_cidrs && output.vpc_cidr == var.vpc_cidr
    error_message = "postgresql_allowed_cidrs are the environment's private subnets"
  }
  assert {
    condition     = output.ansible_inventory.vars.dbtier_environment == var.environment && output.ansible_inventory.vars.ansible_aws_ssm_bucket_name == var.ssm_bucket_name
    error_message = "names follow the environment"
  }
  assert {
    condition     = length(var.alert_email_addresses) > 0
    error_message = "the environment subscribes an address to its alert topic"
  }
}
