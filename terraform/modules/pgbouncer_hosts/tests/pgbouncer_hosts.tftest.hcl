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
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_data "aws_region" {
    defaults = { name = "us-east-1" }
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
    condition     = keys(aws_iam_role_policy_attachment.this) == ["arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"]
    error_message = "the hosts' role carries only the SSM Session Manager policy unless given more"
  }
}

run "health_check_means_pgbouncer_can_serve" {
  command = apply

  assert {
    condition = (
      one(aws_lb_target_group.this.health_check).protocol == "HTTP" &&
      one(aws_lb_target_group.this.health_check).port == "8008" &&
      one(aws_lb_target_group.this.health_check).path == "/health" &&
      one(aws_lb_target_group.this.health_check).matcher == "200"
    )
    error_message = "the NLB checks HTTP GET /health on 8008 for a 200, not a TCP connect to 6432"
  }
  assert {
    condition     = output.health_check == { port = 8008, path = "/health", matcher = "200" }
    error_message = "the health check is an output for the Ansible side"
  }
  assert {
    condition     = output.instance_ids == { for k, i in aws_instance.this : k => i.id }
    error_message = "instance ids by host name are an output (SSM targets)"
  }
}

run "health_check_follows_the_variables" {
  command = plan
  variables {
    pgbouncer_health_port = 9000
    pgbouncer_health_path = "/ready"
  }
  assert {
    condition     = one(aws_lb_target_group.this.health_check).port == "9000" && one(aws_lb_target_group.this.health_check).path == "/ready"
    error_message = "port and path come from pgbouncer_health_port and pgbouncer_health_path"
  }
}

run "ssm_can_be_turned_off" {
  command = plan
  variables {
    ssm_session_manager = false
  }
  assert {
    condition     = length(aws_iam_role_policy_attachment.this) == 0
    error_message = "no policy at all without SSM and without managed_policy_arns"
  }
}

run "rejects_health_port_on_the_pgbouncer_port" {
  command = plan
  variables {
    pgbouncer_health_port = 6432
  }
  expect_failures = [var.pgbouncer_health_port]
}

run "rejects_relative_health_path" {
  command = plan
  variables {
    pgbouncer_health_path = "health"
  }
  expect_failures = [var.pgbouncer_health_path]
}

run "user_data_only_bootstraps" {
  command = plan
  assert {
    condition     = !strcontains(base64decode(aws_instance.this["dbtier-test-pgbouncer-1"].user_data_base64), "pgbouncer.ini")
    error_message = "user data must not configure PgBouncer (that is Ansible's job)"
  }
  assert {
    condition     = strcontains(base64decode(aws_instance.this["dbtier-test-pgbouncer-1"].user_data_base64), "https://s3.us-east-1.amazonaws.com/amazon-ssm-us-east-1/latest/debian_")
    error_message = "user data installs the SSM agent from the region's bucket (through the S3 gateway endpoint)"
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

run "alarms_notify_the_alert_topic" {
  command = apply
  variables {
    alarm_actions = ["arn:aws:sns:us-east-1:123456789012:dbtier-test-alerts"]
  }
  assert {
    condition     = toset([for a in aws_cloudwatch_metric_alarm.status_check : a.alarm_name]) == toset(["dbtier-test-pgbouncer-1-status-check", "dbtier-test-pgbouncer-2-status-check"])
    error_message = "one status check alarm per PgBouncer host, named <host>-status-check"
  }
  assert {
    condition = alltrue([
      for k, a in aws_cloudwatch_metric_alarm.status_check :
      a.metric_name == "StatusCheckFailed" && a.namespace == "AWS/EC2" && a.dimensions == tomap({ InstanceId = aws_instance.this[k].id })
    ])
    error_message = "each status check alarm watches its own instance"
  }
  assert {
    condition = (
      aws_cloudwatch_metric_alarm.target_group["unhealthy-hosts"].alarm_name == "dbtier-test-pgbouncer-unhealthy-hosts" &&
      aws_cloudwatch_metric_alarm.target_group["unhealthy-hosts"].metric_name == "UnHealthyHostCount" &&
      aws_cloudwatch_metric_alarm.target_group["unhealthy-hosts"].comparison_operator == "GreaterThanThreshold" &&
      aws_cloudwatch_metric_alarm.target_group["unhealthy-hosts"].threshold == 0 &&
      aws_cloudwatch_metric_alarm.target_group["no-healthy-hosts"].alarm_name == "dbtier-test-pgbouncer-no-healthy-hosts" &&
      aws_cloudwatch_metric_alarm.target_group["no-healthy-hosts"].metric_name == "HealthyHostCount" &&
      aws_cloudwatch_metric_alarm.target_group["no-healthy-hosts"].comparison_operator == "LessThanThreshold" &&
      aws_cloudwatch_metric_alarm.target_group["no-healthy-hosts"].threshold == 1 &&
      aws_cloudwatch_metric_alarm.target_group["no-healthy-hosts"].treat_missing_data == "breaching"
    )
    error_message = "NLB alarms: UnHealthyHostCount > 0, HealthyHostCount < 1 (missing data = no healthy host)"
  }
  assert {
    condition = alltrue([
      for a in aws_cloudwatch_metric_alarm.target_group :
      a.namespace == "AWS/NetworkELB" && a.dimensions == tomap({ TargetGroup = aws_lb_target_group.this.arn_suffix, LoadBalancer = aws_lb.this.arn_suffix })
    ])
    error_message = "the NLB alarms watch this target group of this load balancer"
  }
  assert {
    condition = alltrue([
      for a in concat(values(aws_cloudwatch_metric_alarm.status_check), values(aws_cloudwatch_metric_alarm.target_group)) :
      a.alarm_actions == toset(var.alarm_actions) && a.ok_actions == toset(var.alarm_actions)
    ])
    error_message = "every alarm and its recovery go to alarm_actions"
  }
}

run "rejects_a_non_sns_alarm_action" {
  command = plan
  variables {
    alarm_actions = ["oncall@example.com"]
  }
  expect_failures = [var.alarm_actions]
}
