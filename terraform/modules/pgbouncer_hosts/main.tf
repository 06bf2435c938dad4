locals {
  hosts = { for i in range(var.instance_count) : "${var.name}-pgbouncer-${i + 1}" => var.subnet_ids[i % length(var.subnet_ids)] }
}

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
  for_each = toset(var.managed_policy_arns)

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

  user_data_base64 = base64encode(templatefile("${path.module}/user_data.sh.tftpl", { hostname = each.key }))

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

  lifecycle {
    ignore_changes = [ami]
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

  health_check {
    protocol            = "TCP"
    port                = "traffic-port"
    interval            = 10
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
