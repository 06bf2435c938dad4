mock_provider "aws" {
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/mock" }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:us-east-1:123456789012:log-group:mock" }
  }
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:us-east-1:123456789012:key/mrk-mock" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{}" }
  }
  mock_data "aws_region" {
    defaults = { name = "us-east-1" }
  }
  mock_data "aws_subnet" {
    defaults = { cidr_block = "10.9.1.0/24" }
  }
}

variables {
  name               = "dbtier-test"
  availability_zones = ["us-east-1a", "us-east-1b"]
  app_cidr_blocks    = ["10.40.100.0/22"]
}

run "private_subnets_in_two_azs" {
  command = apply

  assert {
    condition     = length(aws_subnet.private) == 2 && length(distinct(aws_subnet.private[*].availability_zone)) == 2
    error_message = "expected two private subnets in two AZs"
  }
  assert {
    condition     = alltrue([for s in aws_subnet.private : s.map_public_ip_on_launch == false])
    error_message = "subnets must not hand out public IPs"
  }
  assert {
    condition     = length(aws_default_security_group.this[0].ingress) == 0 && length(aws_default_security_group.this[0].egress) == 0
    error_message = "the default security group must have no rules"
  }
  assert {
    condition     = aws_flow_log.this[0].traffic_type == "ALL"
    error_message = "VPC flow logs must capture all traffic"
  }
}

run "only_the_three_paths_are_open" {
  command = apply

  assert {
    condition     = alltrue([for r in aws_vpc_security_group_ingress_rule.pgbouncer_from_app : r.from_port == 6432 && r.to_port == 6432 && r.ip_protocol == "tcp"])
    error_message = "app -> PgBouncer must be tcp/6432 only"
  }
  assert {
    condition     = keys(aws_vpc_security_group_ingress_rule.pgbouncer_from_app) == ["10.40.100.0/22"]
    error_message = "only the application CIDRs reach PgBouncer"
  }
  assert {
    condition = (
      aws_vpc_security_group_ingress_rule.rds_from_pgbouncer.from_port == 5432 &&
      aws_vpc_security_group_ingress_rule.rds_from_pgbouncer.referenced_security_group_id == aws_security_group.pgbouncer.id &&
      aws_vpc_security_group_ingress_rule.rds_from_ops.referenced_security_group_id == aws_security_group.ops.id &&
      aws_vpc_security_group_ingress_rule.rds_from_ops.to_port == 5432
    )
    error_message = "RDS must accept 5432 from the PgBouncer and ops groups only"
  }
  assert {
    condition     = alltrue([for r in aws_vpc_security_group_egress_rule.https : r.from_port == 443 && r.to_port == 443])
    error_message = "egress besides PostgreSQL must be HTTPS only"
  }
  assert {
    condition = (
      aws_vpc_security_group_ingress_rule.pgbouncer_health_from_vpc.from_port == 8008 &&
      aws_vpc_security_group_ingress_rule.pgbouncer_health_from_vpc.to_port == 8008 &&
      aws_vpc_security_group_ingress_rule.pgbouncer_health_from_vpc.cidr_ipv4 == "10.40.0.0/16" &&
      aws_vpc_security_group_ingress_rule.pgbouncer_health_from_vpc.security_group_id == aws_security_group.pgbouncer.id
    )
    error_message = "the NLB health checks reach the PgBouncer health port from the VPC CIDR only"
  }
  assert {
    condition = alltrue(flatten([
      [for r in aws_vpc_security_group_ingress_rule.pgbouncer_from_app : !(r.from_port <= 22 && r.to_port >= 22)],
      [for r in [
        aws_vpc_security_group_ingress_rule.pgbouncer_health_from_vpc,
        aws_vpc_security_group_ingress_rule.rds_from_pgbouncer,
        aws_vpc_security_group_ingress_rule.rds_from_ops,
        aws_vpc_security_group_ingress_rule.endpoints_https[0],
      ] : !(r.from_port <= 22 && r.to_port >= 22)],
      [for r in aws_vpc_security_group_ingress_rule.pgbouncer_scrape_from_ops : !(r.from_port <= 22 && r.to_port >= 22)],
    ]))
    error_message = "no ingress rule opens SSH (22): management goes through SSM Session Manager"
  }
}

run "prometheus_on_the_ops_host_scrapes_the_pgbouncer_hosts" {
  command = apply

  assert {
    condition = (
      aws_vpc_security_group_ingress_rule.pgbouncer_scrape_from_ops["node-exporter"].from_port == 9100 &&
      aws_vpc_security_group_ingress_rule.pgbouncer_scrape_from_ops["node-exporter"].to_port == 9100 &&
      aws_vpc_security_group_ingress_rule.pgbouncer_scrape_from_ops["pgbouncer-metrics"].from_port == 8008 &&
      aws_vpc_security_group_ingress_rule.pgbouncer_scrape_from_ops["pgbouncer-metrics"].to_port == 8008
    )
    error_message = "the PgBouncer hosts accept node exporter (9100) and PgBouncer metrics (8008) scrapes"
  }
  assert {
    condition = alltrue([
      for r in aws_vpc_security_group_ingress_rule.pgbouncer_scrape_from_ops :
      r.security_group_id == aws_security_group.pgbouncer.id && r.referenced_security_group_id == aws_security_group.ops.id &&
      r.cidr_ipv4 == null && r.ip_protocol == "tcp" && length(r.description) > 0
    ])
    error_message = "scrapes come from the ops security group only, never from a CIDR"
  }
  assert {
    condition = (
      toset([for r in aws_vpc_security_group_egress_rule.ops_scrape_pgbouncer : r.from_port]) == toset([9100, 8008]) &&
      alltrue([
        for r in aws_vpc_security_group_egress_rule.ops_scrape_pgbouncer :
        r.security_group_id == aws_security_group.ops.id && r.referenced_security_group_id == aws_security_group.pgbouncer.id &&
        r.from_port == r.to_port && r.cidr_ipv4 == null && length(r.description) > 0
      ])
    )
    error_message = "the ops host may open the scrape ports to the PgBouncer group only"
  }
  assert {
    condition = !anytrue(flatten([
      for r in aws_vpc_security_group_ingress_rule.pgbouncer_scrape_from_ops : [for p in [9090, 9093] : r.from_port <= p && r.to_port >= p]
    ]))
    error_message = "Prometheus (9090) and Alertmanager (9093) are reached by SSM port forwarding, not opened"
  }
}

run "scrape_ports_follow_the_variables" {
  command = plan
  variables {
    node_exporter_port    = 9200
    pgbouncer_health_port = 8010
  }
  assert {
    condition = (
      aws_vpc_security_group_ingress_rule.pgbouncer_scrape_from_ops["node-exporter"].from_port == 9200 &&
      aws_vpc_security_group_egress_rule.ops_scrape_pgbouncer["node-exporter"].to_port == 9200 &&
      aws_vpc_security_group_ingress_rule.pgbouncer_scrape_from_ops["pgbouncer-metrics"].from_port == 8010 &&
      aws_vpc_security_group_egress_rule.ops_scrape_pgbouncer["pgbouncer-metrics"].to_port == 8010
    )
    error_message = "node_exporter_port and pgbouncer_health_port set the scrape rules"
  }
}

run "rejects_node_exporter_on_the_health_port" {
  command = plan
  variables {
    node_exporter_port = 8008
  }
  expect_failures = [var.node_exporter_port]
}

run "endpoints_give_a_private_way_to_aws" {
  command = apply

  assert {
    condition     = aws_vpc_endpoint.s3[0].vpc_endpoint_type == "Gateway" && aws_vpc_endpoint.s3[0].service_name == "com.amazonaws.us-east-1.s3"
    error_message = "S3 through a gateway endpoint"
  }
  assert {
    condition     = length(aws_route_table.private) == 2 && toset(aws_vpc_endpoint.s3[0].route_table_ids) == toset(aws_route_table.private[*].id)
    error_message = "the S3 gateway endpoint is on every private route table"
  }
  assert {
    condition     = [for a in aws_route_table_association.private : a.route_table_id] == aws_route_table.private[*].id && [for a in aws_route_table_association.private : a.subnet_id] == aws_subnet.private[*].id
    error_message = "each private subnet uses its own route table"
  }
  assert {
    condition     = toset(keys(aws_vpc_endpoint.interface)) == toset(["kms", "secretsmanager", "ssm", "ssmmessages", "ec2messages", "logs", "sts", "rds", "sns"])
    error_message = "interface endpoints for KMS, Secrets Manager, SSM (ssm, ssmmessages, ec2messages), Logs, STS, RDS and SNS (alerts)"
  }
  assert {
    condition = alltrue([
      for k, e in aws_vpc_endpoint.interface :
      e.vpc_endpoint_type == "Interface" && e.private_dns_enabled && e.service_name == "com.amazonaws.us-east-1.${k}" &&
      toset(e.subnet_ids) == toset(aws_subnet.private[*].id) && e.security_group_ids == toset([aws_security_group.endpoints[0].id])
    ])
    error_message = "interface endpoints: private DNS, in the private subnets, behind their own security group"
  }
  assert {
    condition = (
      aws_vpc_security_group_ingress_rule.endpoints_https[0].from_port == 443 &&
      aws_vpc_security_group_ingress_rule.endpoints_https[0].to_port == 443 &&
      aws_vpc_security_group_ingress_rule.endpoints_https[0].ip_protocol == "tcp" &&
      aws_vpc_security_group_ingress_rule.endpoints_https[0].cidr_ipv4 == "10.40.0.0/16"
    )
    error_message = "the endpoints accept HTTPS from the VPC CIDR only"
  }
  assert {
    condition     = output.private_subnet_cidrs == tolist(["10.40.1.0/24", "10.40.2.0/24"])
    error_message = "the private subnet CIDRs are an output (Ansible's postgresql_allowed_cidrs)"
  }
}

run "no_way_out_by_default" {
  command = plan

  assert {
    condition     = length(aws_internet_gateway.this) == 0 && length(aws_nat_gateway.this) == 0 && length(aws_subnet.public) == 0 && length(aws_route.private_nat) == 0 && length(aws_eip.nat) == 0
    error_message = "no internet gateway, NAT gateway, public subnet or default route unless enable_nat_gateway"
  }
}

run "nat_gateway_when_asked" {
  command = apply

  variables {
    enable_nat_gateway  = true
    public_subnet_cidrs = ["10.40.201.0/24", "10.40.202.0/24"]
  }

  assert {
    condition     = length(aws_nat_gateway.this) == 2 && length(aws_eip.nat) == 2 && length(aws_internet_gateway.this) == 1
    error_message = "one NAT gateway with an Elastic IP per public subnet, one internet gateway"
  }
  assert {
    condition     = [for n in aws_nat_gateway.this : n.subnet_id] == aws_subnet.public[*].id && alltrue([for s in aws_subnet.public : !s.map_public_ip_on_launch])
    error_message = "NAT gateways live in the public subnets, which hand out no public IPs"
  }
  assert {
    condition = alltrue([
      for i, r in aws_route.private_nat :
      r.destination_cidr_block == "0.0.0.0/0" && r.route_table_id == aws_route_table.private[i].id && r.nat_gateway_id == aws_nat_gateway.this[i].id
    ])
    error_message = "each private subnet routes 0.0.0.0/0 to the NAT gateway of its zone"
  }
  assert {
    condition     = aws_route.public_internet[0].gateway_id == aws_internet_gateway.this[0].id && aws_route.public_internet[0].destination_cidr_block == "0.0.0.0/0"
    error_message = "the public subnets route to the internet gateway"
  }
}

run "single_nat_gateway" {
  command = apply

  variables {
    enable_nat_gateway  = true
    public_subnet_cidrs = ["10.40.201.0/24"]
  }

  assert {
    condition     = length(aws_nat_gateway.this) == 1 && alltrue([for r in aws_route.private_nat : r.nat_gateway_id == aws_nat_gateway.this[0].id]) && length(aws_route.private_nat) == 2
    error_message = "one public subnet: both private subnets leave through the one NAT gateway"
  }
}

run "rejects_nat_without_public_subnet" {
  command = plan
  variables {
    enable_nat_gateway = true
  }
  expect_failures = [var.public_subnet_cidrs]
}

run "rejects_health_port_on_pgbouncer_port" {
  command = plan
  variables {
    pgbouncer_health_port = 6432
  }
  expect_failures = [var.pgbouncer_health_port]
}

run "existing_vpc_creates_no_network" {
  command = plan

  variables {
    create_vpc          = false
    vpc_id              = "vpc-0123abcd"
    existing_subnet_ids = ["subnet-0a1b2c3d", "subnet-0e1f2a3b"]
    existing_vpc_cidr   = "10.9.0.0/16"
  }

  assert {
    condition     = length(aws_vpc.this) == 0 && length(aws_subnet.private) == 0 && length(aws_flow_log.this) == 0
    error_message = "with create_vpc = false nothing of the network itself is created"
  }
  assert {
    condition     = length(aws_vpc_endpoint.interface) == 0 && length(aws_vpc_endpoint.s3) == 0 && length(aws_route_table.private) == 0
    error_message = "with create_vpc = false no endpoints or route tables are created (the VPC's owner provides them)"
  }
  assert {
    condition     = aws_vpc_security_group_ingress_rule.pgbouncer_health_from_vpc.cidr_ipv4 == "10.9.0.0/16"
    error_message = "the health port is open to the existing VPC's CIDR"
  }
  assert {
    condition     = output.private_subnet_ids == tolist(["subnet-0a1b2c3d", "subnet-0e1f2a3b"])
    error_message = "the given subnets must be passed through"
  }
}

run "rejects_world_open_pgbouncer" {
  command = plan
  variables {
    app_cidr_blocks = ["0.0.0.0/0"]
  }
  expect_failures = [var.app_cidr_blocks]
}

run "rejects_single_az" {
  command = plan
  variables {
    availability_zones = ["us-east-1a"]
  }
  expect_failures = [var.availability_zones]
}

run "rejects_bad_cidr" {
  command = plan
  variables {
    vpc_cidr = "10.40.0.0/33"
  }
  expect_failures = [var.vpc_cidr]
}
