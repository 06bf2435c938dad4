variable "name" {
  description = "Name prefix for every resource of this module (e.g. dbtier-production)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,40}$", var.name))
    error_message = "name must be 3-41 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "create_vpc" {
  description = "Create a VPC and private subnets. Set false to use vpc_id and existing_subnet_ids instead."
  type        = bool
  default     = true
}

variable "vpc_cidr" {
  description = "CIDR block of the VPC created when create_vpc is true."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrnetmask(var.vpc_cidr))
    error_message = "vpc_cidr must be an IPv4 CIDR block such as 10.40.0.0/16."
  }
}

variable "availability_zones" {
  description = "Availability zones of the private subnets: at least two, for Multi-AZ RDS and PgBouncer."
  type        = list(string)

  validation {
    condition     = length(var.availability_zones) >= 2 && length(distinct(var.availability_zones)) == length(var.availability_zones)
    error_message = "availability_zones must list at least two distinct zones."
  }
}

variable "private_subnet_cidrs" {
  description = "CIDR blocks of the private subnets, one per availability zone (used when create_vpc is true)."
  type        = list(string)
  default     = ["10.40.1.0/24", "10.40.2.0/24"]

  validation {
    condition     = alltrue([for c in var.private_subnet_cidrs : can(cidrnetmask(c))])
    error_message = "every private_subnet_cidrs entry must be an IPv4 CIDR block."
  }
}

variable "enable_nat_gateway" {
  description = <<-EOT
    Give the private subnets a way out to the internet: public subnets (public_subnet_cidrs), an
    internet gateway, a NAT gateway with an Elastic IP per public subnet and a 0.0.0.0/0 route from
    every private subnet. Off by default: the AWS APIs the hosts need are reached through VPC
    endpoints, S3 through the gateway endpoint, and packages are expected from a mirror inside the
    network or a baked AMI, so production has no path to the internet (no exfiltration route,
    nothing to pay per GB). Turn it on where hosts must install from public mirrors (staging).
    Only with create_vpc = true.
  EOT
  type        = bool
  default     = false
}

variable "public_subnet_cidrs" {
  description = "CIDR blocks of the public subnets holding the NAT gateways, one per availability zone in order (one entry = a single NAT gateway). Required when enable_nat_gateway is true."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.public_subnet_cidrs : can(cidrnetmask(c))]) && length(var.public_subnet_cidrs) <= length(var.availability_zones)
    error_message = "public_subnet_cidrs must be IPv4 CIDR blocks, at most one per availability zone."
  }
  validation {
    condition     = !var.enable_nat_gateway || length(var.public_subnet_cidrs) > 0
    error_message = "enable_nat_gateway needs at least one public_subnet_cidrs entry for the NAT gateway."
  }
}

variable "interface_endpoint_services" {
  description = "AWS services reached through interface VPC endpoints with private DNS (only with create_vpc = true): KMS, Secrets Manager, the SSM agent's three, CloudWatch Logs, STS, RDS (the ops host drives point-in-time restores) and SNS (Alertmanager on the ops host publishes to the alert topic)."
  type        = list(string)
  default     = ["kms", "secretsmanager", "ssm", "ssmmessages", "ec2messages", "logs", "sts", "rds", "sns"]

  validation {
    condition     = alltrue([for s in var.interface_endpoint_services : can(regex("^[a-z0-9.-]+$", s))]) && !contains(var.interface_endpoint_services, "s3")
    error_message = "interface_endpoint_services entries are service names such as kms or ssm; s3 has its own gateway endpoint."
  }
}

variable "pgbouncer_health_port" {
  description = "Port of the PgBouncer hosts' HTTP health endpoint, opened to the VPC CIDR for the NLB health checks (same value as the pgbouncer_hosts module and Ansible's pgbouncer_health_port)."
  type        = number
  default     = 8008

  validation {
    condition     = var.pgbouncer_health_port > 1024 && var.pgbouncer_health_port < 65536 && var.pgbouncer_health_port != 6432
    error_message = "pgbouncer_health_port must be an unprivileged TCP port (1025-65535) other than PgBouncer's 6432."
  }
}

variable "node_exporter_port" {
  description = "Port of the Prometheus node exporter on the hosts (Ansible: monitoring_node_exporter_port): the PgBouncer hosts accept it from the ops security group, where Prometheus runs."
  type        = number
  default     = 9100

  validation {
    condition     = var.node_exporter_port > 1024 && var.node_exporter_port < 65536 && !contains([6432, var.pgbouncer_health_port], var.node_exporter_port)
    error_message = "node_exporter_port must be an unprivileged TCP port (1025-65535) other than PgBouncer's 6432 and pgbouncer_health_port."
  }
}

variable "vpc_id" {
  description = "Existing VPC id, used only when create_vpc is false."
  type        = string
  default     = null

  validation {
    condition     = var.vpc_id == null || can(regex("^vpc-[0-9a-f]+$", var.vpc_id))
    error_message = "vpc_id must look like vpc-0123abcd."
  }
}

variable "existing_subnet_ids" {
  description = "Existing private subnet ids (at least two AZs), used only when create_vpc is false."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for s in var.existing_subnet_ids : can(regex("^subnet-[0-9a-f]+$", s))])
    error_message = "existing_subnet_ids entries must look like subnet-0123abcd."
  }
}

variable "existing_vpc_cidr" {
  description = "CIDR of the existing VPC (create_vpc = false); lets the NLB health checks reach PgBouncer."
  type        = string
  default     = null
}

variable "app_cidr_blocks" {
  description = "CIDR blocks of the application tier allowed to reach PgBouncer on 6432. Never 0.0.0.0/0."
  type        = list(string)

  validation {
    condition     = length(var.app_cidr_blocks) > 0 && alltrue([for c in var.app_cidr_blocks : can(cidrnetmask(c)) && c != "0.0.0.0/0"])
    error_message = "app_cidr_blocks must be a non-empty list of IPv4 CIDR blocks and must not contain 0.0.0.0/0."
  }
}

variable "egress_https_cidr_blocks" {
  description = "Where PgBouncer and ops hosts may open HTTPS (443) connections: AWS APIs, package mirrors."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "flow_log_retention_days" {
  description = "Retention of the VPC flow log group, in days (only when create_vpc is true)."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.flow_log_retention_days)
    error_message = "flow_log_retention_days must be a CloudWatch Logs retention value (e.g. 30, 90, 365)."
  }
}

variable "flow_log_kms_key_arn" {
  description = "KMS key ARN encrypting the VPC flow log group. Its policy must allow the logs service."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
