mock_provider "aws" {
  mock_data "aws_region" {
    defaults = { name = "eu-central-1" }
  }
}

variables {
  name                  = "dbtier-test-ops"
  ami_id                = "ami-0123456789abcdef0"
  subnet_id             = "subnet-0a1b2c3d"
  security_group_ids    = ["sg-0123abcd"]
  instance_profile_name = "dbtier-test-ops"
}

run "hardened_host_with_the_ops_profile" {
  command = plan

  assert {
    condition     = aws_instance.this.iam_instance_profile == "dbtier-test-ops"
    error_message = "the ops host carries the iam module's profile"
  }
  assert {
    condition     = aws_instance.this.metadata_options[0].http_tokens == "required" && aws_instance.this.root_block_device[0].encrypted
    error_message = "IMDSv2 only, encrypted root volume"
  }
  assert {
    condition     = strcontains(base64decode(aws_instance.this.user_data_base64), "https://s3.eu-central-1.amazonaws.com/amazon-ssm-eu-central-1/latest/debian_")
    error_message = "user data installs the SSM agent of the host's region (Ansible connects through SSM)"
  }
}

run "rejects_bad_ami" {
  command = plan
  variables {
    ami_id = "latest"
  }
  expect_failures = [var.ami_id]
}

run "status_check_alarm_notifies_the_alert_topic" {
  command = apply
  variables {
    alarm_actions = ["arn:aws:sns:eu-central-1:123456789012:dbtier-test-alerts"]
  }
  assert {
    condition = (
      aws_cloudwatch_metric_alarm.status_check.alarm_name == "dbtier-test-ops-status-check" &&
      aws_cloudwatch_metric_alarm.status_check.namespace == "AWS/EC2" &&
      aws_cloudwatch_metric_alarm.status_check.metric_name == "StatusCheckFailed" &&
      aws_cloudwatch_metric_alarm.status_check.dimensions == tomap({ InstanceId = aws_instance.this.id })
    )
    error_message = "one StatusCheckFailed alarm on the ops instance, named <name>-status-check"
  }
  assert {
    condition = (
      aws_cloudwatch_metric_alarm.status_check.alarm_actions == toset(["arn:aws:sns:eu-central-1:123456789012:dbtier-test-alerts"]) &&
      aws_cloudwatch_metric_alarm.status_check.ok_actions == toset(["arn:aws:sns:eu-central-1:123456789012:dbtier-test-alerts"]) &&
      aws_cloudwatch_metric_alarm.status_check.treat_missing_data == "breaching"
    )
    error_message = "the alarm and its recovery go to the alert topic; a stopped host alarms too"
  }
}

run "rejects_a_non_sns_alarm_action" {
  command = plan
  variables {
    alarm_actions = ["arn:aws:sqs:eu-central-1:123456789012:q"]
  }
  expect_failures = [var.alarm_actions]
}
