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
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:us-east-1:123456789012:key/alerts" }
  }
  mock_resource "aws_sns_topic" {
    defaults = { arn = "arn:aws:sns:us-east-1:123456789012:dbtier-test-alerts" }
  }
}

variables {
  name            = "dbtier-test"
  email_addresses = ["oncall-dbtier@example.com"]
}

run "encrypted_topic_with_email" {
  command = apply

  assert {
    condition     = aws_sns_topic.this.name == "dbtier-test-alerts" && aws_sns_topic.this.kms_master_key_id == aws_kms_key.this.arn
    error_message = "the topic is <name>-alerts, encrypted with its own customer-managed key"
  }
  assert {
    condition     = aws_kms_key.this.enable_key_rotation && aws_kms_alias.this.name == "alias/dbtier-test-alerts"
    error_message = "the key rotates and has an alias"
  }
  assert {
    condition     = keys(aws_sns_topic_subscription.email) == ["oncall-dbtier@example.com"] && aws_sns_topic_subscription.email["oncall-dbtier@example.com"].protocol == "email"
    error_message = "one email subscription per address"
  }
  assert {
    condition     = output.topic_arn == "arn:aws:sns:us-east-1:123456789012:dbtier-test-alerts" && output.kms_key_arn == aws_kms_key.this.arn
    error_message = "the topic and its key are outputs"
  }
}

run "only_cloudwatch_of_this_account_publishes" {
  command = apply

  assert {
    condition = (
      length(data.aws_iam_policy_document.topic.statement) == 1 &&
      one(data.aws_iam_policy_document.topic.statement[0].principals).identifiers == toset(["cloudwatch.amazonaws.com"]) &&
      data.aws_iam_policy_document.topic.statement[0].actions == toset(["sns:Publish"]) &&
      data.aws_iam_policy_document.topic.statement[0].resources == toset([aws_sns_topic.this.arn])
    )
    error_message = "the topic policy lets only CloudWatch publish, to this topic"
  }
  assert {
    condition = contains([
      for c in data.aws_iam_policy_document.topic.statement[0].condition : c.variable if c.test == "StringEquals" && c.values == tolist(["123456789012"])
    ], "aws:SourceAccount")
    error_message = "CloudWatch publishes only for alarms of this account (aws:SourceAccount)"
  }
  assert {
    condition = (
      one([for s in data.aws_iam_policy_document.key.statement : s.actions if s.sid == "CloudWatchAlarmsUseTheKey"]) == toset(["kms:GenerateDataKey*", "kms:Decrypt"]) &&
      one(one([for s in data.aws_iam_policy_document.key.statement : s.principals if s.sid == "CloudWatchAlarmsUseTheKey"])).identifiers == toset(["cloudwatch.amazonaws.com"]) &&
      one(one([for s in data.aws_iam_policy_document.key.statement : s.condition if s.sid == "CloudWatchAlarmsUseTheKey"])).variable == "aws:SourceAccount" &&
      one(one([for s in data.aws_iam_policy_document.key.statement : s.condition if s.sid == "CloudWatchAlarmsUseTheKey"])).values == tolist(["123456789012"])
    )
    error_message = "the key lets CloudWatch alarms of this account encrypt for the topic"
  }
}

run "no_subscription_without_addresses" {
  command = plan
  variables {
    email_addresses = []
  }
  assert {
    condition     = length(aws_sns_topic_subscription.email) == 0
    error_message = "no addresses, no subscriptions"
  }
}

run "rejects_a_non_address" {
  command = plan
  variables {
    email_addresses = ["oncall"]
  }
  expect_failures = [var.email_addresses]
}
