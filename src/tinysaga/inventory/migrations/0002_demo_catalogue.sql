-- The demo catalogue.
INSERT INTO products(product_id, name, product_type, price, available_count) VALUES
  ('sku-laptop-14',     'Featherweight 14" Laptop',       'electronics', 899.00, 12),
  ('sku-headphones',    'Noise-Cancelling Headphones',    'electronics', 149.50, 40),
  ('sku-keyboard',      'Mechanical Keyboard',            'electronics',  79.99, 25),
  ('sku-usb-c-cable',   'USB-C Cable, 2 m',               'electronics',   9.99, 500),
  ('sku-rain-jacket',   'Packable Rain Jacket',           'clothing',     59.00, 30),
  ('sku-wool-socks',    'Merino Wool Socks (3 pairs)',    'clothing',     24.00, 120),
  ('sku-running-shoes', 'Trail Running Shoes',            'clothing',    110.00, 18),
  ('sku-espresso',      'Single-Origin Espresso Beans',   'grocery',      16.50, 200),
  ('sku-green-tea',     'Sencha Green Tea, 100 g',        'grocery',       8.25, 150),
  ('sku-saga-book',     'Designing Data Systems (book)',  'books',        42.00, 35),
  ('sku-notebook',      'Dotted Notebook A5',             'books',         6.75, 300),
  ('sku-limited-print', 'Limited Edition Art Print',      'art',         250.00, 3)
ON CONFLICT (product_id) DO NOTHING;
INSERT INTO stock_changes(product_id, new_count, changed_by)
  SELECT product_id, available_count, 'seed' FROM products;
