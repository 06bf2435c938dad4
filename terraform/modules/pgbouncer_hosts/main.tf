locals {
  hosts = { for i in range(var.instance_count) : "${var.name}-pgbouncer-${i + 1}" => var.subnet_ids[i % length(var.subnet_ids)] }

  # Ansible connects through SSM Session Manager (amazon.aws.aws_ssm): the agent needs this
  # AWS-maintained policy (ssm, ssmmessages, ec2messages). No SSH port is open anywhere.
  ssm_policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
  policy_arns    = toset(concat(var.ssm_session_manager ? [local.ssm_policy_arn] : [], var.managed_policy_arns))
}

data "aws_partition" "current" {}
data "aws_region" "current" {}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  name               = "${var.name}-pgbouncer"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "this" {
  for_each = local.policy_arns

  role       = aws_iam_role.this.name
  policy_arn = each.value
}

resource "aws_iam_instance_profile" "this" {
  name = "${var.name}-pgbouncer"
  role = aws_iam_role.this.name
  tags = var.tags
}

# User data only bootstraps what Ansible needs to connect; PgBouncer itself is Ansible's job.
resource "aws_instance" "this" {
  for_each = local.hosts

  ami                    = var.ami_id
  instance_type          = var.instance_type
  subnet_id              = each.value
  vpc_security_group_ids = var.security_group_ids
  iam_instance_profile   = aws_iam_instance_profile.this.name
  key_name               = var.ssh_key_name
  monitoring             = var.detailed_monitoring
  ebs_optimized          = true

  user_data_base64 = base64encode(templatefile("${path.module}/user_data.sh.tftpl", { hostname = each.key, region = data.aws_region.current.name }))

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

  tags        = merge(var.tags, { Name = each.key, Role = "pgbouncer" })
  volume_tags = merge(var.tags, { Name = each.key })

  # User data runs only at the first boot: changing it on a running host would only stop and
  # start it. Like a new AMI, new user data reaches a host when it is replaced deliberately.
  lifecycle {
    ignore_changes = [ami, user_data_base64]
  }
}

resource "aws_lb" "this" {
  #checkov:skip=CKV_AWS_91:A TCP load balancer for PostgreSQL traffic; its access logs only exist for TLS listeners, and PgBouncer logs every connection.
  name                             = "${var.name}-pgbouncer"
  internal                         = true
  load_balancer_type               = "network"
  subnets                          = var.subnet_ids
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.nlb_deletion_protection
  tags                             = var.tags
}

resource "aws_lb_target_group" "this" {
  name                 = "${var.name}-pgbouncer"
  port                 = var.port
  protocol             = "TCP"
  vpc_id               = var.vpc_id
  target_type          = "instance"
  deregistration_delay = 30

  # Not a TCP check of 6432: that passes while the database behind PgBouncer is down. The hosts
  # serve HTTP on pgbouncer_health_port (Ansible, roles/pgbouncer): 200 on pgbouncer_health_path
  # only when `SELECT 1` through the local PgBouncer works.
  health_check {
    protocol            = "HTTP"
    port                = tostring(var.pgbouncer_health_port)
    path                = var.pgbouncer_health_path
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }

  tags = var.tags
}

resource "aws_lb_target_group_attachment" "this" {
  for_each = aws_instance.this

  target_group_arn = aws_lb_target_group.this.arn
  target_id        = each.value.id
  port             = var.port
}

resource "aws_lb_listener" "this" {
  load_balancer_arn = aws_lb.this.arn
  port              = var.port
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this.arn
  }

  tags = var.tags
}

# --- CloudWatch alarms, named like the RDS module's (<name>-<what>), to alarm_actions ---------

# A failed system or instance status check: the host is unreachable or impaired. Missing data
# means the instance is stopped or gone, which the tier never does on purpose: it alarms too.
resource "aws_cloudwatch_metric_alarm" "status_check" {
  for_each = aws_instance.this

  alarm_name          = "${each.key}-status-check"
  alarm_description   = "EC2 ${each.key} (PgBouncer): status check failed for 2 minutes"
  namespace           = "AWS/EC2"
  metric_name         = "StatusCheckFailed"
  statistic           = "Maximum"
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  period              = 60
  evaluation_periods  = 2
  treat_missing_data  = "breaching"
  dimensions          = { InstanceId = each.value.id }
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = var.tags
}

locals {
  # One PgBouncer host out for 3 minutes (longer than a rolling restart) is worth a look; no
  # healthy host at all for 2 minutes is an outage of the tier. An NLB with registered targets
  # reports both every minute: missing data means it does not, so the outage alarm counts it.
  target_alarms = {
    unhealthy-hosts = {
      metric      = "UnHealthyHostCount"
      statistic   = "Maximum"
      comparison  = "GreaterThanThreshold"
      threshold   = 0
      periods     = 3
      missing     = "notBreaching"
      description = "a PgBouncer host fails the NLB health check (${var.pgbouncer_health_path} on ${var.pgbouncer_health_port}) for 3 minutes"
    }
    no-healthy-hosts = {
      metric      = "HealthyHostCount"
      statistic   = "Minimum"
      comparison  = "LessThanThreshold"
      threshold   = 1
      periods     = 2
      missing     = "breaching"
      description = "no healthy PgBouncer host behind the NLB for 2 minutes: applications cannot connect"
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "target_group" {
  for_each = local.target_alarms

  alarm_name          = "${var.name}-pgbouncer-${each.key}"
  alarm_description   = "NLB ${aws_lb.this.name}: ${each.value.description}"
  namespace           = "AWS/NetworkELB"
  metric_name         = each.value.metric
  statistic           = each.value.statistic
  comparison_operator = each.value.comparison
  threshold           = each.value.threshold
  period              = 60
  evaluation_periods  = each.value.periods
  datapoints_to_alarm = each.value.periods
  treat_missing_data  = each.value.missing
  dimensions = {
    TargetGroup  = aws_lb_target_group.this.arn_suffix
    LoadBalancer = aws_lb.this.arn_suffix
  }
  alarm_actions = var.alarm_actions
  ok_actions    = var.alarm_actions
  tags          = var.tags
}
