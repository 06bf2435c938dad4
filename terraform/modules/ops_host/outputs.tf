output "host" {
  description = "The ops host: name, instance id, private IP, availability zone."
  value = {
    name              = var.name
    id                = aws_instance.this.id
    private_ip        = aws_instance.this.private_ip
    availability_zone = aws_instance.this.availability_zone
  }
}

output "alarm_arns" {
  description = "CloudWatch alarm ARNs by name (<name>-status-check)."
  value       = { (aws_cloudwatch_metric_alarm.status_check.alarm_name) = aws_cloudwatch_metric_alarm.status_check.arn }
}
