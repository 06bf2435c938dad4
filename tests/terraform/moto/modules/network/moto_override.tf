# TEST ONLY: moto drops the description of rules that reference another security group.
resource "aws_vpc_security_group_ingress_rule" "rds_from_pgbouncer" {
  lifecycle {
    ignore_changes = [description]
  }
}

resource "aws_vpc_security_group_ingress_rule" "rds_from_ops" {
  lifecycle {
    ignore_changes = [description]
  }
}

resource "aws_vpc_security_group_egress_rule" "to_rds" {
  lifecycle {
    ignore_changes = [description]
  }
}

resource "aws_vpc_security_group_ingress_rule" "pgbouncer_scrape_from_ops" {
  lifecycle {
    ignore_changes = [description]
  }
}

resource "aws_vpc_security_group_egress_rule" "ops_scrape_pgbouncer" {
  lifecycle {
    ignore_changes = [description]
  }
}
