mock_provider "aws" {
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/mock" }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:us-east-1:123456789012:log-group:mock" }
  }
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:us-east-1:123456789012:key/mrk-mock" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{}" }
  }
  mock_data "aws_region" {
    defaults = { name = "us-east-1" }
  }
}

variables {
  name               = "dbtier-test"
  availability_zones = ["us-east-1a", "us-east-1b"]
  app_cidr_blocks    = ["10.40.100.0/22"]
}

run "private_subnets_in_two_azs" {
  command = apply

  assert {
    condition     = length(aws_subnet.private) == 2 && length(distinct(aws_subnet.private[*].availability_zone)) == 2
    error_message = "expected two private subnets in two AZs"
  }
  assert {
    condition     = alltrue([for s in aws_subnet.private : s.map_public_ip_on_launch == false])
    error_message = "subnets must not hand out public IPs"
  }
  assert {
    condition     = length(aws_default_security_group.this[0].ingress) == 0 && length(aws_default_security_group.this[0].egress) == 0
    error_message = "the default security group must have no rules"
  }
  assert {
    condition     = aws_flow_log.this[0].traffic_type == "ALL"
    error_message = "VPC flow logs must capture all traffic"
  }
}

run "only_the_three_paths_are_open" {
  command = apply

  assert {
    condition     = alltrue([for r in aws_vpc_security_group_ingress_rule.pgbouncer_from_app : r.from_port == 6432 && r.to_port == 6432 && r.ip_protocol == "tcp"])
    error_message = "app -> PgBouncer must be tcp/6432 only"
  }
  assert {
    condition     = keys(aws_vpc_security_group_ingress_rule.pgbouncer_from_app) == ["10.40.100.0/22"]
    error_message = "only the application CIDRs reach PgBouncer"
  }
  assert {
    condition = (
      aws_vpc_security_group_ingress_rule.rds_from_pgbouncer.from_port == 5432 &&
      aws_vpc_security_group_ingress_rule.rds_from_pgbouncer.referenced_security_group_id == aws_security_group.pgbouncer.id &&
      aws_vpc_security_group_ingress_rule.rds_from_ops.referenced_security_group_id == aws_security_group.ops.id &&
      aws_vpc_security_group_ingress_rule.rds_from_ops.to_port == 5432
    )
    error_message = "RDS must accept 5432 from the PgBouncer and ops groups only"
  }
  assert {
    condition     = alltrue([for r in aws_vpc_security_group_egress_rule.https : r.from_port == 443 && r.to_port == 443])
    error_message = "egress besides PostgreSQL must be HTTPS only"
  }
}

run "existing_vpc_creates_no_network" {
  command = plan

  variables {
    create_vpc          = false
    vpc_id              = "vpc-0123abcd"
    existing_subnet_ids = ["subnet-0a1b2c3d", "subnet-0e1f2a3b"]
    existing_vpc_cidr   = "10.9.0.0/16"
  }

  assert {
    condition     = length(aws_vpc.this) == 0 && length(aws_subnet.private) == 0 && length(aws_flow_log.this) == 0
    error_message = "with create_vpc = false nothing of the network itself is created"
  }
  assert {
    condition     = output.private_subnet_ids == tolist(["subnet-0a1b2c3d", "subnet-0e1f2a3b"])
    error_message = "the given subnets must be passed through"
  }
}

run "rejects_world_open_pgbouncer" {
  command = plan
  variables {
    app_cidr_blocks = ["0.0.0.0/0"]
  }
  expect_failures = [var.app_cidr_blocks]
}

run "rejects_single_az" {
  command = plan
  variables {
    availability_zones = ["us-east-1a"]
  }
  expect_failures = [var.availability_zones]
}

run "rejects_bad_cidr" {
  command = plan
  variables {
    vpc_cidr = "10.40.0.0/33"
  }
  expect_failures = [var.vpc_cidr]
}
