data "aws_region" "current" {}

# User data only bootstraps what Ansible needs to connect (Python, the SSM agent); dbtier and its
# cron are Ansible's job. The instance profile (iam module) lets the agent talk to SSM.
resource "aws_instance" "this" {
  ami                    = var.ami_id
  instance_type          = var.instance_type
  subnet_id              = var.subnet_id
  vpc_security_group_ids = var.security_group_ids
  iam_instance_profile   = var.instance_profile_name
  key_name               = var.ssh_key_name
  monitoring             = var.detailed_monitoring
  ebs_optimized          = true

  user_data_base64 = base64encode(templatefile("${path.module}/user_data.sh.tftpl", { hostname = var.name, region = data.aws_region.current.name }))

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
  }

  root_block_device {
    volume_type = "gp3"
    volume_size = var.root_volume_size
    encrypted   = true
    kms_key_id  = var.ebs_kms_key_arn
  }

  tags        = merge(var.tags, { Name = var.name, Role = "ops" })
  volume_tags = merge(var.tags, { Name = var.name })

  # User data runs only at the first boot: changing it on a running host would only stop and
  # start it. Like a new AMI, new user data reaches a host when it is replaced deliberately.
  lifecycle {
    ignore_changes = [ami, user_data_base64]
  }
}

# A failed system or instance status check: backups, Prometheus and Alertmanager run here. Named
# like the RDS module's alarms (<name>-<what>); missing data (host stopped or gone) alarms too.
resource "aws_cloudwatch_metric_alarm" "status_check" {
  alarm_name          = "${var.name}-status-check"
  alarm_description   = "EC2 ${var.name} (ops and backup host): status check failed for 2 minutes"
  namespace           = "AWS/EC2"
  metric_name         = "StatusCheckFailed"
  statistic           = "Maximum"
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  period              = 60
  evaluation_periods  = 2
  treat_missing_data  = "breaching"
  dimensions          = { InstanceId = aws_instance.this.id }
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = var.tags
}
