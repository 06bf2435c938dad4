mock_provider "aws" {
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/mock" }
  }
  mock_resource "aws_lb" {
    defaults = { arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/mock/1" }
  }
  mock_resource "aws_lb_target_group" {
    defaults = { arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/mock/1" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{}" }
  }
}

variables {
  name               = "dbtier-test"
  ami_id             = "ami-0123456789abcdef0"
  vpc_id             = "vpc-0123abcd"
  subnet_ids         = ["subnet-0a1b2c3d", "subnet-0e1f2a3b"]
  security_group_ids = ["sg-0123abcd"]
}

run "two_hosts_across_azs_behind_an_nlb" {
  command = apply

  assert {
    condition     = length(aws_instance.this) == 2 && length(distinct([for i in aws_instance.this : i.subnet_id])) == 2
    error_message = "two hosts in two subnets"
  }
  assert {
    condition     = alltrue([for i in aws_instance.this : i.metadata_options[0].http_tokens == "required"])
    error_message = "IMDSv2 only"
  }
  assert {
    condition     = alltrue([for i in aws_instance.this : i.root_block_device[0].encrypted])
    error_message = "root volumes encrypted"
  }
  assert {
    condition     = alltrue([for i in aws_instance.this : i.iam_instance_profile == aws_iam_instance_profile.this.name])
    error_message = "hosts carry the instance profile"
  }
  assert {
    condition     = aws_lb.this.internal && aws_lb.this.load_balancer_type == "network" && aws_lb.this.enable_cross_zone_load_balancing
    error_message = "internal, cross-zone network load balancer"
  }
  assert {
    condition     = aws_lb_listener.this.port == 6432 && aws_lb_listener.this.protocol == "TCP" && aws_lb_target_group.this.port == 6432
    error_message = "the NLB forwards TCP 6432"
  }
  assert {
    condition     = length(aws_lb_target_group_attachment.this) == 2
    error_message = "every host is a target"
  }
  assert {
    condition     = length(aws_iam_role_policy_attachment.this) == 0
    error_message = "the hosts' role has no permissions unless given"
  }
}

run "user_data_only_bootstraps" {
  command = plan
  assert {
    condition     = !strcontains(base64decode(aws_instance.this["dbtier-test-pgbouncer-1"].user_data_base64), "pgbouncer.ini")
    error_message = "user data must not configure PgBouncer (that is Ansible's job)"
  }
}

run "rejects_a_single_host" {
  command = plan
  variables {
    instance_count = 1
  }
  expect_failures = [var.instance_count]
}

run "rejects_bad_ami" {
  command = plan
  variables {
    ami_id = "debian-12"
  }
  expect_failures = [var.ami_id]
}
