variable "name" {
  description = "Name prefix (e.g. dbtier-production); hosts are named <name>-pgbouncer-<n>."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,20}$", var.name))
    error_message = "name must be 3-21 lowercase letters, digits and hyphens (the NLB name is limited to 32 characters)."
  }
}

variable "instance_count" {
  description = "Number of PgBouncer hosts, spread round-robin over subnet_ids. At least 2 (two AZs)."
  type        = number
  default     = 2

  validation {
    condition     = var.instance_count >= 2 && floor(var.instance_count) == var.instance_count
    error_message = "instance_count must be a whole number of at least 2."
  }
}

variable "instance_type" {
  description = "EC2 instance type of the PgBouncer hosts."
  type        = string
  default     = "t3.small"
}

variable "ami_id" {
  description = "AMI of the hosts (Debian 12 recommended; the environment looks it up)."
  type        = string

  validation {
    condition     = can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must look like ami-0123456789abcdef0."
  }
}

variable "subnet_ids" {
  description = "Private subnets in at least two availability zones."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "subnet_ids must hold at least two subnets (two availability zones)."
  }
}

variable "vpc_id" {
  description = "VPC of the subnets (for the NLB target group)."
  type        = string
}

variable "security_group_ids" {
  description = "Security groups of the hosts (the network module's pgbouncer group)."
  type        = list(string)

  validation {
    condition     = length(var.security_group_ids) > 0
    error_message = "security_group_ids must not be empty."
  }
}

variable "port" {
  description = "PgBouncer listen port, also the NLB listener port."
  type        = number
  default     = 6432

  validation {
    condition     = var.port > 1024 && var.port < 65536
    error_message = "port must be an unprivileged TCP port (1025-65535)."
  }
}

variable "pgbouncer_health_port" {
  description = "Port of the HTTP health endpoint Ansible serves on each host (Ansible: pgbouncer_health_port); the NLB target group checks it."
  type        = number
  default     = 8008

  validation {
    condition     = var.pgbouncer_health_port > 1024 && var.pgbouncer_health_port < 65536 && var.pgbouncer_health_port != var.port
    error_message = "pgbouncer_health_port must be an unprivileged TCP port (1025-65535) other than the PgBouncer port."
  }
}

variable "pgbouncer_health_path" {
  description = "Path of the health endpoint (Ansible: pgbouncer_health_path); 200 means `SELECT 1` through the local PgBouncer works."
  type        = string
  default     = "/health"

  validation {
    condition     = can(regex("^/[A-Za-z0-9._~/-]*$", var.pgbouncer_health_path)) && length(var.pgbouncer_health_path) <= 1024
    error_message = "pgbouncer_health_path must be an absolute URL path such as /health."
  }
}

variable "root_volume_size" {
  description = "Root volume size in GiB (gp3, encrypted)."
  type        = number
  default     = 20

  validation {
    condition     = var.root_volume_size >= 8
    error_message = "root_volume_size must be at least 8 GiB."
  }
}

variable "ebs_kms_key_arn" {
  description = "KMS key for the root volumes; null uses the account's default EBS key."
  type        = string
  default     = null
}

variable "detailed_monitoring" {
  description = "One-minute CloudWatch metrics for the instances."
  type        = bool
  default     = true
}

variable "ssh_key_name" {
  description = "EC2 key pair for Ansible over SSH; null when access goes through SSM Session Manager."
  type        = string
  default     = null
}

variable "ssm_session_manager" {
  description = "Attach AmazonSSMManagedInstanceCore to the hosts' role so that Ansible connects over SSM Session Manager (amazon.aws.aws_ssm) instead of SSH."
  type        = bool
  default     = true
}

variable "managed_policy_arns" {
  description = "Further managed policies attached to the hosts' role. Nothing by default."
  type        = list(string)
  default     = []
}

variable "nlb_deletion_protection" {
  description = "Deletion protection of the network load balancer."
  type        = bool
  default     = true
}

variable "alarm_actions" {
  description = "SNS topic ARNs notified by the CloudWatch alarms (and on recovery): the tier passes its alert topic."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.alarm_actions : can(regex("^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]+$", a))])
    error_message = "alarm_actions entries must be SNS topic ARNs."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
