locals {
  vpc_id       = var.create_vpc ? aws_vpc.this[0].id : var.vpc_id
  subnet_ids   = var.create_vpc ? aws_subnet.private[*].id : var.existing_subnet_ids
  subnet_cidrs = var.create_vpc ? aws_subnet.private[*].cidr_block : [for id in var.existing_subnet_ids : data.aws_subnet.existing[id].cidr_block]
  vpc_cidr     = var.create_vpc ? var.vpc_cidr : coalesce(var.existing_vpc_cidr, var.vpc_cidr)

  nat = var.create_vpc && var.enable_nat_gateway

  create_flow_key  = var.create_vpc && var.flow_log_kms_key_arn == null
  flow_kms_key_arn = local.create_flow_key ? aws_kms_key.flow[0].arn : var.flow_log_kms_key_arn
}

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

data "aws_subnet" "existing" {
  for_each = var.create_vpc ? toset([]) : toset(var.existing_subnet_ids)

  id = each.value
}

data "aws_iam_policy_document" "flow_key" {
  #checkov:skip=CKV_AWS_109:A KMS key policy; "*" means this key. The account root delegates to IAM policies, which are scoped.
  #checkov:skip=CKV_AWS_111:A KMS key policy; "*" means this key. The account root delegates to IAM policies, which are scoped.
  #checkov:skip=CKV_AWS_356:A KMS key policy; "*" means this key (the only resource a key policy can name).
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }

  statement {
    sid       = "CloudWatchLogsUseTheKey"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${data.aws_region.current.name}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${data.aws_partition.current.partition}:logs:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:log-group:/dbtier/${var.name}/*"]
    }
  }
}

resource "aws_kms_key" "flow" {
  count = local.create_flow_key ? 1 : 0

  description             = "${var.name} VPC flow logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.flow_key.json
  tags                    = var.tags
}

resource "aws_vpc" "this" {
  count = var.create_vpc ? 1 : 0

  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = merge(var.tags, { Name = var.name })
}

# No rules at all: nothing may use the default security group.
resource "aws_default_security_group" "this" {
  count = var.create_vpc ? 1 : 0

  vpc_id = aws_vpc.this[0].id
  tags   = merge(var.tags, { Name = "${var.name}-default-deny" })
}

resource "aws_subnet" "private" {
  count = var.create_vpc ? length(var.availability_zones) : 0

  vpc_id                  = aws_vpc.this[0].id
  cidr_block              = var.private_subnet_cidrs[count.index]
  availability_zone       = var.availability_zones[count.index]
  map_public_ip_on_launch = false

  tags = merge(var.tags, { Name = "${var.name}-private-${var.availability_zones[count.index]}", Tier = "private" })
}

resource "aws_cloudwatch_log_group" "flow" {
  count = var.create_vpc ? 1 : 0

  name              = "/dbtier/${var.name}/vpc-flow"
  retention_in_days = var.flow_log_retention_days
  kms_key_id        = local.flow_kms_key_arn
  tags              = var.tags
}

data "aws_iam_policy_document" "flow_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "flow" {
  count = var.create_vpc ? 1 : 0

  name               = "${var.name}-vpc-flow"
  assume_role_policy = data.aws_iam_policy_document.flow_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "flow" {
  count = var.create_vpc ? 1 : 0

  statement {
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.flow[0].arn}:*"]
  }
}

resource "aws_iam_role_policy" "flow" {
  count = var.create_vpc ? 1 : 0

  name   = "write-flow-logs"
  role   = aws_iam_role.flow[0].id
  policy = data.aws_iam_policy_document.flow[0].json
}

resource "aws_flow_log" "this" {
  count = var.create_vpc ? 1 : 0

  vpc_id          = aws_vpc.this[0].id
  traffic_type    = "ALL"
  log_destination = aws_cloudwatch_log_group.flow[0].arn
  iam_role_arn    = aws_iam_role.flow[0].arn
  tags            = var.tags
}

# --- security groups: app -> PgBouncer 6432; PgBouncer and ops -> RDS 5432; nothing else in ---

resource "aws_security_group" "pgbouncer" {
  #checkov:skip=CKV2_AWS_5:Attached outside this module (pgbouncer_hosts, ops_host, rds), composed by the environment.
  name        = "${var.name}-pgbouncer"
  description = "PgBouncer hosts: 6432 from the application tier and the NLB"
  vpc_id      = local.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-pgbouncer" })
}

resource "aws_security_group" "ops" {
  #checkov:skip=CKV2_AWS_5:Attached outside this module (pgbouncer_hosts, ops_host, rds), composed by the environment.
  name        = "${var.name}-ops"
  description = "Ops and backup host: no inbound, outbound to RDS and HTTPS"
  vpc_id      = local.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-ops" })
}

resource "aws_security_group" "rds" {
  #checkov:skip=CKV2_AWS_5:Attached outside this module (pgbouncer_hosts, ops_host, rds), composed by the environment.
  name        = "${var.name}-rds"
  description = "RDS PostgreSQL: 5432 from PgBouncer and the ops host only"
  vpc_id      = local.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-rds" })
}

resource "aws_vpc_security_group_ingress_rule" "pgbouncer_from_app" {
  for_each = toset(var.app_cidr_blocks)

  security_group_id = aws_security_group.pgbouncer.id
  description       = "PgBouncer from application tier ${each.value}"
  ip_protocol       = "tcp"
  from_port         = 6432
  to_port           = 6432
  cidr_ipv4         = each.value
}

# The NLB keeps client addresses for instance targets, so 6432 needs only the application CIDRs.
# Its health checks come from its own private addresses inside the VPC, to the health endpoint
# Ansible serves on the PgBouncer hosts (HTTP GET pgbouncer_health_path on pgbouncer_health_port).
resource "aws_vpc_security_group_ingress_rule" "pgbouncer_health_from_vpc" {
  security_group_id = aws_security_group.pgbouncer.id
  description       = "PgBouncer health endpoint for the NLB health checks inside the VPC"
  ip_protocol       = "tcp"
  from_port         = var.pgbouncer_health_port
  to_port           = var.pgbouncer_health_port
  cidr_ipv4         = local.vpc_cidr
}

# Prometheus runs on the ops host and scrapes the PgBouncer hosts: node exporter, and PgBouncer's
# metrics on the health port (GET /metrics). It scrapes the ops host's own exporters without
# leaving the host, so no rule is needed for those. Prometheus (9090) and Alertmanager (9093)
# get no ingress at all: operators reach them by SSM port forwarding.
locals {
  scrape_ports = {
    node-exporter     = { port = var.node_exporter_port, what = "node exporter" }
    pgbouncer-metrics = { port = var.pgbouncer_health_port, what = "PgBouncer metrics (health service /metrics)" }
  }
}

resource "aws_vpc_security_group_ingress_rule" "pgbouncer_scrape_from_ops" {
  for_each = local.scrape_ports

  security_group_id            = aws_security_group.pgbouncer.id
  description                  = "Prometheus on the ops host scrapes ${each.value.what}"
  ip_protocol                  = "tcp"
  from_port                    = each.value.port
  to_port                      = each.value.port
  referenced_security_group_id = aws_security_group.ops.id
}

resource "aws_vpc_security_group_egress_rule" "ops_scrape_pgbouncer" {
  for_each = local.scrape_ports

  security_group_id            = aws_security_group.ops.id
  description                  = "Prometheus scrapes ${each.value.what} on the PgBouncer hosts"
  ip_protocol                  = "tcp"
  from_port                    = each.value.port
  to_port                      = each.value.port
  referenced_security_group_id = aws_security_group.pgbouncer.id
}

resource "aws_vpc_security_group_ingress_rule" "rds_from_pgbouncer" {
  security_group_id            = aws_security_group.rds.id
  description                  = "PostgreSQL from PgBouncer"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.pgbouncer.id
}

resource "aws_vpc_security_group_ingress_rule" "rds_from_ops" {
  security_group_id            = aws_security_group.rds.id
  description                  = "PostgreSQL from the ops and backup host"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.ops.id
}

resource "aws_vpc_security_group_egress_rule" "to_rds" {
  for_each = {
    pgbouncer = aws_security_group.pgbouncer.id
    ops       = aws_security_group.ops.id
  }

  security_group_id            = each.value
  description                  = "PostgreSQL to RDS"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.rds.id
}

resource "aws_vpc_security_group_egress_rule" "https" {
  for_each = {
    for pair in setproduct(["pgbouncer", "ops"], var.egress_https_cidr_blocks) :
    "${pair[0]}-${pair[1]}" => { sg = pair[0], cidr = pair[1] }
  }

  security_group_id = each.value.sg == "ops" ? aws_security_group.ops.id : aws_security_group.pgbouncer.id
  description       = "HTTPS to AWS APIs and package mirrors"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value.cidr
}

# --- routing: one route table per private subnet; S3 through a gateway endpoint -------------

resource "aws_route_table" "private" {
  count = var.create_vpc ? length(var.availability_zones) : 0

  vpc_id = aws_vpc.this[0].id
  tags   = merge(var.tags, { Name = "${var.name}-private-${var.availability_zones[count.index]}", Tier = "private" })
}

resource "aws_route_table_association" "private" {
  count = var.create_vpc ? length(var.availability_zones) : 0

  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private[count.index].id
}

# Backups, the SSM file transfers, the SSM agent package and a package mirror kept in S3 reach
# S3 without the internet. Gateway endpoints serve buckets of this region only.
resource "aws_vpc_endpoint" "s3" {
  count = var.create_vpc ? 1 : 0

  vpc_id            = aws_vpc.this[0].id
  service_name      = "com.amazonaws.${data.aws_region.current.name}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = aws_route_table.private[*].id
  tags              = merge(var.tags, { Name = "${var.name}-s3" })
}

# --- interface endpoints: the AWS APIs the hosts call, on private IPs with private DNS --------

resource "aws_security_group" "endpoints" {
  count = var.create_vpc && length(var.interface_endpoint_services) > 0 ? 1 : 0

  name        = "${var.name}-vpc-endpoints"
  description = "Interface VPC endpoints: HTTPS from inside the VPC only"
  vpc_id      = aws_vpc.this[0].id
  tags        = merge(var.tags, { Name = "${var.name}-vpc-endpoints" })
}

resource "aws_vpc_security_group_ingress_rule" "endpoints_https" {
  count = var.create_vpc && length(var.interface_endpoint_services) > 0 ? 1 : 0

  security_group_id = aws_security_group.endpoints[0].id
  description       = "HTTPS to the AWS API endpoints from the VPC"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = var.vpc_cidr
}

resource "aws_vpc_endpoint" "interface" {
  for_each = var.create_vpc ? toset(var.interface_endpoint_services) : toset([])

  vpc_id              = aws_vpc.this[0].id
  service_name        = "com.amazonaws.${data.aws_region.current.name}.${each.value}"
  vpc_endpoint_type   = "Interface"
  subnet_ids          = aws_subnet.private[*].id
  security_group_ids  = [aws_security_group.endpoints[0].id]
  private_dns_enabled = true
  tags                = merge(var.tags, { Name = "${var.name}-${each.value}" })
}

# --- optional NAT gateway: the way out to the internet, off unless enable_nat_gateway ----------

resource "aws_internet_gateway" "this" {
  count = local.nat ? 1 : 0

  vpc_id = aws_vpc.this[0].id
  tags   = merge(var.tags, { Name = var.name })
}

resource "aws_subnet" "public" {
  count = local.nat ? length(var.public_subnet_cidrs) : 0

  vpc_id                  = aws_vpc.this[0].id
  cidr_block              = var.public_subnet_cidrs[count.index]
  availability_zone       = var.availability_zones[count.index]
  map_public_ip_on_launch = false # only the NAT gateways live here, with their Elastic IPs

  tags = merge(var.tags, { Name = "${var.name}-public-${var.availability_zones[count.index]}", Tier = "public" })
}

resource "aws_route_table" "public" {
  count = local.nat ? 1 : 0

  vpc_id = aws_vpc.this[0].id
  tags   = merge(var.tags, { Name = "${var.name}-public", Tier = "public" })
}

resource "aws_route" "public_internet" {
  count = local.nat ? 1 : 0

  route_table_id         = aws_route_table.public[0].id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this[0].id
}

resource "aws_route_table_association" "public" {
  count = local.nat ? length(var.public_subnet_cidrs) : 0

  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public[0].id
}

resource "aws_eip" "nat" {
  #checkov:skip=CKV2_AWS_19:The Elastic IP of a NAT gateway, not of an EC2 instance.
  count = local.nat ? length(var.public_subnet_cidrs) : 0

  domain = "vpc"
  tags   = merge(var.tags, { Name = "${var.name}-nat-${var.availability_zones[count.index]}" })

  depends_on = [aws_internet_gateway.this]
}

resource "aws_nat_gateway" "this" {
  count = local.nat ? length(var.public_subnet_cidrs) : 0

  allocation_id = aws_eip.nat[count.index].id
  subnet_id     = aws_subnet.public[count.index].id
  tags          = merge(var.tags, { Name = "${var.name}-${var.availability_zones[count.index]}" })

  depends_on = [aws_internet_gateway.this]
}

# Each private subnet leaves through the NAT gateway of its zone, or the first one when there is
# a single public subnet (cheaper, not zone-redundant).
resource "aws_route" "private_nat" {
  count = local.nat ? length(var.availability_zones) : 0

  route_table_id         = aws_route_table.private[count.index].id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = aws_nat_gateway.this[count.index % length(var.public_subnet_cidrs)].id
}
