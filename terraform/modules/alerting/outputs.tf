output "topic_arn" {
  description = "ARN of the alert topic (alarm_actions of the CloudWatch alarms, Alertmanager's sns_configs)."
  value       = aws_sns_topic.this.arn
}

output "topic_name" {
  description = "Name of the alert topic (<name>-alerts)."
  value       = aws_sns_topic.this.name
}

output "kms_key_arn" {
  description = "KMS key encrypting the topic: publishers need kms:GenerateDataKey and kms:Decrypt on it through SNS."
  value       = aws_kms_key.this.arn
}

output "email_subscription_arns" {
  description = "Email subscriptions by address (pending until the address confirms)."
  value       = { for a, s in aws_sns_topic_subscription.email : a => s.arn }
}
